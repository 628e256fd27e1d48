package main

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	good := "text\n```mermaid\nflowchart LR\n  subgraph a[\"x\"]\n    b --> c\n  end\n```\n" +
		"```sh\necho end\n```\n" +
		"```mermaid\n%% a comment\nsequenceDiagram\n  alt ok\n    A->>B: hi\n  else no\n    A->>B: bye\n  end\n```\n" +
		"```mermaid\nstateDiagram-v2\n  [*] --> Active: issued\n```\n"
	if n, problems := check("good.md", strings.NewReader(good)); n != 3 || len(problems) != 0 {
		t.Errorf("good: %d blocks, %v", n, problems)
	}
	for name, bad := range map[string]string{
		"unknown type":      "```mermaid\nflowhcart LR\n  a --> b\n```\n",
		"empty":             "```mermaid\n\n```\n",
		"unclosed subgraph": "```mermaid\nflowchart LR\n  subgraph x\n  a --> b\n```\n",
		"stray end":         "```mermaid\nsequenceDiagram\n  A->>B: hi\n  end\n```\n",
		"unclosed alt":      "```mermaid\nsequenceDiagram\n  alt x\n  A->>B: hi\n```\n",
		"unclosed block":    "```mermaid\ngraph TD\n  a --> b\n",
		"quotes":            "```mermaid\nflowchart LR\n  a[\"x] --> b\n```\n",
		"semicolon":         "```mermaid\nsequenceDiagram\n  A->>B: one; two\n```\n",
	} {
		if _, problems := check(name+".md", strings.NewReader(bad)); len(problems) == 0 {
			t.Errorf("%s: no problem found in\n%s", name, bad)
		}
	}
}

// Command docscheck checks the Mermaid diagrams in Markdown files without
// rendering them (no renderer is downloaded; GitHub renders them): every
// ```mermaid block is closed, starts with a diagram type Mermaid knows, and
// balances its blocks — subgraph … end in flowcharts; alt, opt, loop, par,
// critical, break, rect … end in sequence diagrams — and its quotes.
// `make check-generated` runs it on README.md and docs/.
//
//	go run ./hack/docscheck README.md docs
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	var problems []string
	blocks := 0
	for _, arg := range os.Args[1:] {
		err := filepath.WalkDir(arg, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".md") {
				return err
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer func() { _ = f.Close() }()
			n, found := check(path, f)
			blocks += n
			problems = append(problems, found...)
			return nil
		})
		if err != nil {
			problems = append(problems, err.Error())
		}
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "docscheck: %d problems in Mermaid diagrams\n", len(problems))
		os.Exit(1)
	}
	fmt.Printf("docscheck: %d Mermaid diagrams look well-formed\n", blocks)
}

// headers are the diagram types Mermaid knows (its first keyword).
var headers = []string{
	"flowchart", "graph", "sequenceDiagram", "stateDiagram-v2", "stateDiagram", "classDiagram",
	"erDiagram", "gantt", "pie", "journey", "gitGraph", "mindmap", "timeline", "quadrantChart",
	"requirementDiagram", "C4Context", "C4Container", "C4Component", "C4Dynamic", "C4Deployment",
	"sankey-beta", "xychart-beta", "block-beta", "packet-beta", "architecture-beta", "kanban", "radar-beta",
}

// opens are the keywords that open a block closed by "end", per diagram type.
var opens = map[string][]string{
	"flowchart":       {"subgraph"},
	"graph":           {"subgraph"},
	"sequenceDiagram": {"alt", "opt", "loop", "par", "critical", "break", "rect", "box"},
}

// check reads one Markdown file and returns how many Mermaid blocks it
// holds and what is wrong with them, as "file:line: problem".
func check(name string, r io.Reader) (int, []string) {
	var problems []string
	add := func(line int, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s:%d: %s", name, line, fmt.Sprintf(format, args...)))
	}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	blocks, line, start := 0, 0, 0
	inMermaid, inOther := false, false
	kind := ""
	var open []int // lines of the blocks not yet closed
	for s.Scan() {
		line++
		text := strings.TrimSpace(s.Text())
		switch {
		case !inMermaid && !inOther && strings.HasPrefix(text, "```mermaid"):
			inMermaid, start, kind, open = true, line, "", nil
			blocks++
			continue
		case !inMermaid && strings.HasPrefix(text, "```"):
			inOther = !inOther
			continue
		case !inMermaid:
			continue
		case text == "```":
			if kind == "" {
				add(start, "empty Mermaid block")
			}
			for _, l := range open {
				add(l, "block opened here is never closed with end")
			}
			inMermaid = false
			continue
		case text == "" || strings.HasPrefix(text, "%%"):
			continue
		}
		if kind == "" {
			first := strings.Fields(text)[0]
			for _, h := range headers {
				if first == h {
					kind = h
				}
			}
			if kind == "" {
				add(line, "%q is not a Mermaid diagram type (one of %s)", first, strings.Join(headers, ", "))
				kind = "unknown"
			}
			continue
		}
		if strings.Count(text, `"`)%2 != 0 {
			add(line, "unbalanced double quotes")
		}
		if kind == "sequenceDiagram" && strings.Contains(text, ";") {
			add(line, "a semicolon ends a statement in a sequence diagram: write the message without it")
		}
		word := strings.Fields(text)[0]
		for _, o := range opens[kind] {
			if word == o {
				open = append(open, line)
			}
		}
		if word == "end" && opens[kind] != nil {
			if len(open) == 0 {
				add(line, "end without a block to close")
			} else {
				open = open[:len(open)-1]
			}
		}
	}
	if inMermaid {
		add(start, "Mermaid block never closed with ```")
	}
	return blocks, problems
}

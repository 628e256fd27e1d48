package main

import (
	"strings"
	"testing"
)

func TestParseGroupsDocumentedTargetsBySection(t *testing.T) {
	makefile := `
.PHONY: all
all: build

##@ General

help: ## Show this help.
	@awk ...

##@ Development

VAR ?= x
undocumented: something
	true
test: vet test-unit ## Everything: a|b.
bench-quick: ## Quick.

##@ Empty
`
	sections, err := parse(strings.NewReader(makefile))
	if err != nil {
		t.Fatal(err)
	}
	got := render(sections)
	want := "**General**\n\n| target | runs first | what it does |\n|---|---|---|\n| `make help` |  | Show this help. |\n\n" +
		"**Development**\n\n| target | runs first | what it does |\n|---|---|---|\n| `make test` | `vet test-unit` | Everything: a\\|b. |\n| `make bench-quick` |  | Quick. |\n"
	if got != want {
		t.Errorf("render:\n%s\nwant:\n%s", got, want)
	}
}

func TestReplaceBetweenKeepsTheRestOfThePage(t *testing.T) {
	page := "# Dev\n\n" + beginMarker + "\nold\n" + endMarker + "\n\nafter\n"
	got, err := replaceBetween(page, "new\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# Dev\n\n" + beginMarker + "\n\nnew\n\n" + endMarker + "\n\nafter\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	again, _ := replaceBetween(got, "new\n")
	if again != got {
		t.Error("a second run changes the page")
	}
	if _, err := replaceBetween("# no markers\n", "x"); err == nil {
		t.Error("a page without markers must be an error")
	}
}

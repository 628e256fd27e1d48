package controlplane

import (
	"os/exec"
	"strings"
	"testing"
)

// Development tooling lives under internal/devenv so that hack/local and the
// tests may share it; what ships (the manager and the kubectl plugin) must
// never link it, nor anything from test/ or hack/, nor envtest.
func TestNoShippedBinaryLinksDevelopmentTooling(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".", "./cmd/kubectl-keyward")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{Module + "/internal/devenv", Module + "/test/", Module + "/hack/", "sigs.k8s.io/controller-runtime/pkg/envtest"}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list found only %d dependencies; the check would prove nothing", len(deps))
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("a shipped binary links %s", dep)
			}
		}
	}
}

// Package controlplane holds what the test harness (test/harness/testenv),
// `make local` (hack/local) and the benchmarks (test/bench) share about
// running a real Kubernetes control plane: where the repository and the control-plane binaries are, which
// manifests get applied, the kube-controller-manager process, and a watchdog
// that stops every child process if its parent dies. It lives under
// internal/devenv so that hack/ and test/ may both import it; no shipped
// binary links it (TestNoShippedBinaryLinksDevelopmentTooling).
package controlplane

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Module is the Go module path of the repository root.
const Module = "keyward.dev/keyward"

// VersionsFile is where the control-plane versions are recorded, relative to
// the repository root.
const VersionsFile = "hack/controlplane/versions.env"

// RepoRoot returns the repository root: the nearest directory, walking up from
// the working directory, whose go.mod declares module keyward.dev/keyward.
// Nested modules (hack/controlplane) are skipped. When the working directory
// is outside the repository it falls back to the location of this source file.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, start := range starts {
		if root, ok := findModuleRoot(start, Module); ok {
			return root, nil
		}
	}
	return "", fmt.Errorf("no go.mod of module %s found above %v", Module, starts)
}

func findModuleRoot(dir, module string) (string, bool) {
	dir = filepath.Clean(dir)
	for {
		if modulePath(filepath.Join(dir, "go.mod")) == module {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// modulePath returns the module path declared by a go.mod file, or "".
func modulePath(gomod string) string {
	f, err := os.Open(gomod)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// Versions reads hack/controlplane/versions.env (KEY=VALUE lines, # comments).
func Versions(root string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(root, VersionsFile))
	if err != nil {
		return nil, err
	}
	return parseEnv(string(data)), nil
}

func parseEnv(text string) map[string]string {
	out := map[string]string{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return out
}

// Binaries are the executables a control plane needs, as built by
// `make controlplane`.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"}

// BinDir returns the directory holding the control-plane binaries:
// $KUBEBUILDER_ASSETS when set, otherwise
// <root>/bin/k8s/<KUBERNETES_VERSION from versions.env>. It fails with a hint
// to run `make controlplane` when a binary is missing.
func BinDir(root string) (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		v, err := Versions(root)
		if err != nil {
			return "", fmt.Errorf("reading control-plane versions: %w", err)
		}
		ver := v["KUBERNETES_VERSION"]
		if ver == "" {
			return "", fmt.Errorf("KUBERNETES_VERSION missing from %s", filepath.Join(root, VersionsFile))
		}
		dir = filepath.Join(root, "bin", "k8s", ver)
	}
	var missing []string
	for _, b := range Binaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return dir, errors.New("control-plane binaries " + strings.Join(missing, ", ") + " missing from " + dir +
			": run `make controlplane` (it builds them from the Go module proxy) or set KUBEBUILDER_ASSETS")
	}
	return dir, nil
}

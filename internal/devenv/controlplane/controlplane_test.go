package controlplane

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeYAMLMultiDocumentListsAndNonObjects(t *testing.T) {
	in := `# leading comment
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: a
---
# a document with only comments
---
apiVersion: v1
kind: List
items:
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRoleBinding
  metadata:
    name: b
- apiVersion: admissionregistration.k8s.io/v1
  kind: ValidatingAdmissionPolicy
  metadata:
    name: c
---
resources:
- role.yaml
---
{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}}
`
	objs, err := DecodeYAML(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	want := []string{"ClusterRole/a", "ClusterRoleBinding/b", "ValidatingAdmissionPolicy/c", "ConfigMap/d"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestDecodeYAMLRejectsBrokenYAML(t *testing.T) {
	if _, err := DecodeYAML(strings.NewReader("kind: [unclosed\n")); err == nil {
		t.Fatal("expected an error for broken YAML")
	}
}

func TestReadManifestsFiltersKindsOrdersAndSkipsMissingDirs(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "admission", "policy.yaml"), `
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: vapb}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: vap}
`)
	write(t, filepath.Join(dir, "admission", "kustomization.yaml"), "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [policy.yaml]\n")
	write(t, filepath.Join(dir, "rbac", "nested", "roles.yml"), `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: crb}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cr}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: x}
`)
	write(t, filepath.Join(dir, "rbac", "notes.txt"), "kind: ClusterRole\n")

	ms, err := ReadManifests([]string{
		filepath.Join(dir, "rbac"), filepath.Join(dir, "admission"), filepath.Join(dir, "does-not-exist"),
	}, ClusterKinds)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Object.GetName())
	}
	want := []string{"cr", "vap", "crb", "vapb"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFindModuleRootSkipsNestedModules(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "go.mod"), "// comment\nmodule keyward.dev/keyward\n\ngo 1.26.0\n")
	write(t, filepath.Join(root, "hack", "controlplane", "go.mod"), "module keyward.dev/keyward/hack/controlplane\n")
	start := filepath.Join(root, "hack", "controlplane", "etcd")
	if err := os.MkdirAll(start, 0o755); err != nil {
		t.Fatal(err)
	}
	got, ok := findModuleRoot(start, Module)
	if !ok || got != root {
		t.Fatalf("findModuleRoot = %q, %v; want %q", got, ok, root)
	}
	if _, ok := findModuleRoot(t.TempDir(), Module); ok {
		t.Fatal("found a module root where there is none")
	}
}

func TestRepoRootIsThisRepository(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, VersionsFile)); err != nil {
		t.Fatalf("RepoRoot %s has no %s: %v", root, VersionsFile, err)
	}
}

func TestVersionsAndBinDir(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, VersionsFile), "# c\nKUBERNETES_VERSION=v9.9.9\nexport ETCD_VERSION=\"v3.7.0\"\n")
	v, err := Versions(root)
	if err != nil {
		t.Fatal(err)
	}
	if v["KUBERNETES_VERSION"] != "v9.9.9" || v["ETCD_VERSION"] != "v3.7.0" {
		t.Fatalf("Versions = %v", v)
	}

	t.Setenv("KUBEBUILDER_ASSETS", "")
	dir, err := BinDir(root)
	if err == nil || !strings.Contains(err.Error(), "make controlplane") {
		t.Fatalf("BinDir with no binaries: err = %v, want a hint to run make controlplane", err)
	}
	if want := filepath.Join(root, "bin", "k8s", "v9.9.9"); dir != want {
		t.Fatalf("BinDir = %s, want %s", dir, want)
	}
	for _, b := range Binaries {
		write(t, filepath.Join(dir, b), "#!/bin/sh\n")
		if err := os.Chmod(filepath.Join(dir, b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := BinDir(root); err != nil {
		t.Fatalf("BinDir with all binaries: %v", err)
	}

	assets := t.TempDir()
	t.Setenv("KUBEBUILDER_ASSETS", assets)
	if dir, _ := BinDir(root); dir != assets {
		t.Fatalf("BinDir honours KUBEBUILDER_ASSETS: got %s, want %s", dir, assets)
	}
}

func TestWatchdogReleaseKillsNothing(t *testing.T) {
	d, err := StartWatchdog()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Add(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	d.Release() // must not signal us; the test would die if it did
	d.Release() // idempotent
	if err := d.Add(1); err == nil {
		t.Fatal("Add after Release should fail")
	}
}

func TestWatchdogKillsRecordedProcessesWhenItsParentGoes(t *testing.T) {
	child := exec.Command("sleep", "300")
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	t.Cleanup(func() { _ = child.Process.Kill() })

	d, err := StartWatchdog()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Add(child.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// What the kernel does when this process dies: the pipe's write end closes.
	_ = d.w.Close()

	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Fatalf("child ended with %v, want killed by SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("watchdog did not kill the recorded process")
	}
	_ = d.cmd.Wait()
}

func TestServiceAccountSubjectsGetTheInstallNamespace(t *testing.T) {
	objs, err := DecodeYAML(strings.NewReader(`
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: b}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: r}
subjects:
- {kind: ServiceAccount, name: controller-manager}
- {kind: ServiceAccount, name: other, namespace: elsewhere}
- {kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}
`))
	if err != nil {
		t.Fatal(err)
	}
	defaultSubjectNamespaces(objs[0])
	subjects := objs[0].Object["subjects"].([]any)
	var got []any
	for _, s := range subjects {
		got = append(got, s.(map[string]any)["namespace"])
	}
	if got[0] != InstallNamespace || got[1] != "elsewhere" || got[2] != nil {
		t.Fatalf("subject namespaces = %v", got)
	}
}

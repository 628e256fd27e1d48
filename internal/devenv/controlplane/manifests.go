package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// ClusterKinds are the kinds installed from config/rbac and config/admission,
// in the order they are applied: roles and policies before what binds them.
var ClusterKinds = []string{
	"ClusterRole",
	"ValidatingAdmissionPolicy",
	"MutatingAdmissionPolicy",
	"ClusterRoleBinding",
	"ValidatingAdmissionPolicyBinding",
	"MutatingAdmissionPolicyBinding",
}

// ClusterManifestDirs are the directories, relative to the repository root,
// whose ClusterKinds objects every control plane gets (tests and make local).
var ClusterManifestDirs = []string{"config/rbac", "config/admission"}

// Manifest is one object read from a YAML file.
type Manifest struct {
	Object *unstructured.Unstructured
	File   string
}

func (m Manifest) String() string {
	return fmt.Sprintf("%s %s (%s)", m.Object.GetKind(), m.Object.GetName(), m.File)
}

// ReadManifests reads every *.yaml / *.yml file under dirs (recursively; a
// missing directory is skipped), splits multi-document files, flattens
// `kind: List`, and returns the objects whose kind is in kinds, ordered by the
// position of their kind in kinds, then by file and position in the file.
func ReadManifests(dirs []string, kinds []string) ([]Manifest, error) {
	var out []Manifest
	for _, dir := range dirs {
		files, err := yamlFiles(dir)
		if err != nil {
			return nil, err
		}
		for _, file := range files {
			objs, err := readFile(file)
			if err != nil {
				return nil, err
			}
			for _, o := range objs {
				if slices.Contains(kinds, o.GetKind()) {
					out = append(out, Manifest{Object: o, File: file})
				}
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Manifest) int {
		return slices.Index(kinds, a.Object.GetKind()) - slices.Index(kinds, b.Object.GetKind())
	})
	return out, nil
}

func yamlFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == dir {
				return fs.SkipAll
			}
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	slices.Sort(files)
	return files, err
}

func readFile(file string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	objs, err := DecodeYAML(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return objs, nil
}

// DecodeYAML decodes a multi-document YAML (or JSON) stream into unstructured
// objects. Empty documents are skipped; `kind: List` is flattened. A document
// without apiVersion or kind (e.g. a kustomization's fragments) is skipped.
func DecodeYAML(r io.Reader) ([]*unstructured.Unstructured, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out []*unstructured.Unstructured
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // only comments
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			// Missing apiVersion/kind: not a Kubernetes object.
			if runtime.IsMissingKind(err) || runtime.IsMissingVersion(err) {
				continue
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", i, err)
			}
			for j := range list.Items {
				out = append(out, &list.Items[j])
			}
			continue
		}
		out = append(out, u)
	}
}

// FieldOwner is the server-side-apply field manager of everything the harness
// and make local install.
const FieldOwner = "keyward-controlplane"

// Apply server-side applies the manifests in order (forcing ownership, so a
// re-run after an edit converges).
func Apply(ctx context.Context, c client.Client, manifests []Manifest) error {
	for _, m := range manifests {
		obj := m.Object.DeepCopy()
		obj.SetResourceVersion("")
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj),
			client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s: %w", m, err)
		}
	}
	return nil
}

// InstallNamespace is where config/default installs Keyward (its kustomization
// sets it on every namespaced object and on ServiceAccount subjects).
const InstallNamespace = "keyward-system"

// defaultSubjectNamespaces does what kustomize's `namespace:` does for a
// binding: a ServiceAccount subject without a namespace gets InstallNamespace
// (the API server rejects it otherwise).
func defaultSubjectNamespaces(u *unstructured.Unstructured) {
	if u.GetKind() != "ClusterRoleBinding" && u.GetKind() != "RoleBinding" {
		return
	}
	subjects, found, err := unstructured.NestedSlice(u.Object, "subjects")
	if !found || err != nil {
		return
	}
	for _, s := range subjects {
		if m, ok := s.(map[string]any); ok && m["kind"] == "ServiceAccount" && m["namespace"] == nil {
			m["namespace"] = InstallNamespace
		}
	}
	_ = unstructured.SetNestedSlice(u.Object, subjects, "subjects")
}

// InstallClusterManifests reads ClusterKinds from ClusterManifestDirs under
// root and applies them, as `kustomize build config/default` would set them
// up; it returns what it applied.
func InstallClusterManifests(ctx context.Context, c client.Client, root string) ([]Manifest, error) {
	dirs := make([]string, len(ClusterManifestDirs))
	for i, d := range ClusterManifestDirs {
		dirs[i] = filepath.Join(root, d)
	}
	ms, err := ReadManifests(dirs, ClusterKinds)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		defaultSubjectNamespaces(m.Object)
	}
	return ms, Apply(ctx, c, ms)
}

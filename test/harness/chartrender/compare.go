package chartrender

import (
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Objects decodes a YAML stream (a rendering, install.yaml, kustomize's
// output) into its objects, dropping empty documents.
func Objects(stream string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if err == io.EOF {
				return out, nil
			}
			return nil, err
		}
		if len(u.Object) != 0 {
			out = append(out, u)
		}
	}
}

// What only Helm puts on an object: its bookkeeping labels, and the
// annotation that keeps the CRDs on helm uninstall (crds.keep).
var (
	helmLabels      = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}
	helmAnnotations = []string{"helm.sh/resource-policy"}
)

// ClusterScoped are the cluster-scoped kinds Keyward installs. kustomize's
// namespace transformer does not know the admission policy kinds and puts
// its namespace on them; the API server drops it.
var ClusterScoped = []string{"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
	"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

// Key names an object: kind, namespace and name.
func Key(u *unstructured.Unstructured) string {
	ns := u.GetNamespace()
	if slices.Contains(ClusterScoped, u.GetKind()) {
		ns = ""
	}
	return u.GetKind() + " " + ns + "/" + u.GetName()
}

// Diff compares two installations object by object and returns one line
// per difference: an object only one of them has, or a field whose values
// differ. Helm's own labels and annotations, and white space inside strings
// (kustomize refolds the CEL expressions' block scalars), do not count.
func Diff(wantName string, want []*unstructured.Unstructured, gotName string, got []*unstructured.Unstructured) []string {
	index := func(objs []*unstructured.Unstructured) map[string]map[string]any {
		m := map[string]map[string]any{}
		for _, o := range objs {
			m[Key(o)] = comparable(o)
		}
		return m
	}
	w, g := index(want), index(got)
	var diffs []string
	for _, k := range sortedKeys(w) {
		if _, ok := g[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: in %s, not in %s", k, wantName, gotName))
			continue
		}
		for _, d := range diffValues("", w[k], g[k]) {
			diffs = append(diffs, fmt.Sprintf("%s: %s (%s vs %s)", k, d, wantName, gotName))
		}
	}
	for _, k := range sortedKeys(g) {
		if _, ok := w[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: in %s, not in %s", k, gotName, wantName))
		}
	}
	return diffs
}

func comparable(o *unstructured.Unstructured) map[string]any {
	c := o.DeepCopy()
	labels, annotations := c.GetLabels(), c.GetAnnotations()
	for _, l := range helmLabels {
		delete(labels, l)
	}
	for _, a := range helmAnnotations {
		delete(annotations, a)
	}
	c.SetLabels(labels)
	c.SetAnnotations(annotations)
	if slices.Contains(ClusterScoped, c.GetKind()) {
		c.SetNamespace("")
	}
	return normalize(c.Object).(map[string]any)
}

// normalize collapses the white space in every string.
func normalize(v any) any {
	switch v := v.(type) {
	case string:
		return strings.Join(strings.Fields(v), " ")
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = normalize(e)
		}
		return out
	}
	return v
}

// diffValues names the paths at which a and b differ.
func diffValues(path string, a, b any) []string {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		var out []string
		keys := sortedKeys(am)
		for _, k := range sortedKeys(bm) {
			if _, ok := am[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			out = append(out, diffValues(path+"."+k, am[k], bm[k])...)
		}
		return out
	}
	as, aok := a.([]any)
	bs, bok := b.([]any)
	if aok && bok && len(as) == len(bs) {
		var out []string
		for i := range as {
			out = append(out, diffValues(fmt.Sprintf("%s[%d]", path, i), as[i], bs[i])...)
		}
		return out
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	return []string{fmt.Sprintf("%s: %v vs %v", strings.TrimPrefix(path, "."), brief(a), brief(b))}
}

func brief(v any) string {
	if v == nil {
		return "<none>"
	}
	s := fmt.Sprint(v)
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return slices.Clip(keys)
}

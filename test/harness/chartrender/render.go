// Package chartrender renders and lints the Helm chart charts/keyward with
// the Helm Go SDK, as `helm template` and `helm lint` would, so that tests
// can check and apply the rendering without a Helm binary. Only tests use it.
package chartrender

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// KubeVersion is the Kubernetes version the chart is rendered for (the
// control plane the tests run).
var KubeVersion = chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}

// Dir is the chart's directory under the repository root.
func Dir(root string) string { return filepath.Join(root, "charts", "keyward") }

// Render renders the chart in dir (a directory or a packaged .tgz) for a
// release name in namespace with the values (merged over values.yaml, as helm
// --set/-f do, and checked against values.schema.json) and returns the
// manifests in Helm's install order, as one YAML stream. apiVersions are
// served by the cluster besides the built-in ones, as helm template's
// --api-versions (e.g. "monitoring.coreos.com/v1/ServiceMonitor").
func Render(dir, name, namespace string, values map[string]any, apiVersions ...string) (string, error) {
	return RenderFor(KubeVersion, dir, name, namespace, values, apiVersions...)
}

// RenderFor is Render for a cluster of another Kubernetes version; like helm
// install, it refuses a version outside the chart's kubeVersion.
func RenderFor(kube chartutil.KubeVersion, dir, name, namespace string, values map[string]any, apiVersions ...string) (string, error) {
	chrt, err := loader.Load(dir)
	if err != nil {
		return "", err
	}
	if c := chrt.Metadata.KubeVersion; c != "" && !chartutil.IsCompatibleRange(c, kube.String()) {
		return "", fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", c, kube.String())
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = kube
	caps.APIVersions = append(slices.Clone(caps.APIVersions), apiVersions...)
	vals, err := chartutil.ToRenderValues(chrt, values, chartutil.ReleaseOptions{
		Name: name, Namespace: namespace, Revision: 1, IsInstall: true, IsUpgrade: false,
	}, caps)
	if err != nil {
		return "", err
	}
	files, err := engine.Render(chrt, vals)
	if err != nil {
		return "", err
	}
	for f := range files {
		if strings.HasSuffix(f, "NOTES.txt") {
			delete(files, f)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return "", err
	}
	if len(hooks) != 0 {
		return "", fmt.Errorf("the chart has %d hooks; kubectl apply would not run them", len(hooks))
	}
	var b strings.Builder
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, strings.TrimSpace(m.Content))
	}
	return b.String(), nil
}

// Lint runs helm lint's rules on the chart in dir with the values and
// returns every message of severity warning or error.
func Lint(dir, namespace string, values map[string]any) []support.Message {
	l := lint.AllWithKubeVersion(dir, values, namespace, &KubeVersion)
	var out []support.Message
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			out = append(out, m)
		}
	}
	return out
}

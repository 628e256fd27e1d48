package chartrender

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"keyward.dev/keyward/internal/devenv/controlplane"
)

var monitoringValues = map[string]any{
	"prometheusRule":   map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
	"grafanaDashboard": map[string]any{"enabled": true, "annotations": map[string]any{"grafana_folder": "Keyward"}},
}

// kustomized builds a directory under config/ as kubectl kustomize does.
func kustomized(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "config", dir))
	if err != nil {
		t.Fatal(err)
	}
	body, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return objects(t, string(body))
}

// The alerts and the dashboard are off by default (their CRD, or Grafana,
// may be missing), and when switched on the chart renders the objects
// config/prometheus and config/grafana make: the same rules, the same
// dashboard, under the same names for a release named keyward.
func TestAlertsAndDashboard(t *testing.T) {
	out, err := Render(chartDir(t), "keyward", "keyward-system", nil)
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out)
	if find(objs, "PrometheusRule", "") != nil || find(objs, "ConfigMap", "keyward-grafana-dashboard") != nil {
		t.Fatal("the alerts or the dashboard are rendered by default")
	}

	out, err = Render(chartDir(t), "keyward", "keyward-system", monitoringValues)
	if err != nil {
		t.Fatal(err)
	}
	objs = objects(t, out)
	rule, dashboard := find(objs, "PrometheusRule", "keyward"), find(objs, "ConfigMap", "keyward-grafana-dashboard")
	if rule == nil || dashboard == nil {
		t.Fatalf("rule %v, dashboard %v rendered", rule != nil, dashboard != nil)
	}
	if rule.GetNamespace() != "keyward-system" || rule.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule: namespace %q, labels %v", rule.GetNamespace(), rule.GetLabels())
	}
	if dashboard.GetLabels()["grafana_dashboard"] != "1" || dashboard.GetAnnotations()["grafana_folder"] != "Keyward" {
		t.Errorf("dashboard ConfigMap: labels %v, annotations %v", dashboard.GetLabels(), dashboard.GetAnnotations())
	}
	var board map[string]any
	if err := json.Unmarshal([]byte(dashboard.Object["data"].(map[string]any)["keyward.json"].(string)), &board); err != nil || board["uid"] != "keyward" {
		t.Fatalf("the dashboard is not Keyward's JSON: %v", err)
	}

	kRule := find(kustomized(t, "prometheus"), "PrometheusRule", "keyward")
	kDashboard := find(kustomized(t, "grafana"), "ConfigMap", "keyward-grafana-dashboard")
	if kRule == nil || kDashboard == nil {
		t.Fatalf("config/prometheus makes a PrometheusRule: %v; config/grafana a ConfigMap: %v", kRule != nil, kDashboard != nil)
	}
	if !reflect.DeepEqual(rule.Object["spec"], kRule.Object["spec"]) {
		t.Error("the chart's rules differ from config/prometheus' (run make monitoring)")
	}
	if kRule.GetNamespace() != "keyward-system" || kDashboard.GetNamespace() != "keyward-system" || kDashboard.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("kustomize: rule in %q, dashboard in %q with labels %v", kRule.GetNamespace(), kDashboard.GetNamespace(), kDashboard.GetLabels())
	}
	var kBoard map[string]any
	if err := json.Unmarshal([]byte(kDashboard.Object["data"].(map[string]any)["keyward.json"].(string)), &kBoard); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(board, kBoard) {
		t.Error("the chart's dashboard differs from config/grafana's (run make monitoring)")
	}

	// The rule file users load without the Prometheus Operator is the
	// PrometheusRule's spec.
	root, _ := controlplane.RepoRoot()
	var file map[string]any
	data, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "keyward.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalize(file), normalize(kRule.Object["spec"])) {
		t.Error("config/prometheus/prometheusrule.yaml is not keyward.rules.yaml (run make monitoring)")
	}

	for _, m := range Lint(chartDir(t), "keyward-system", monitoringValues) {
		t.Errorf("helm lint: %s", m)
	}

	// Elsewhere when asked.
	out, err = Render(chartDir(t), "keyward", "keyward-system", map[string]any{
		"prometheusRule":   map[string]any{"enabled": true, "namespace": "monitoring"},
		"grafanaDashboard": map[string]any{"enabled": true, "namespace": "grafana"},
	})
	if err != nil {
		t.Fatal(err)
	}
	objs = objects(t, out)
	if ns := find(objs, "PrometheusRule", "").GetNamespace(); ns != "monitoring" {
		t.Errorf("PrometheusRule in %q", ns)
	}
	if ns := find(objs, "ConfigMap", "keyward-grafana-dashboard").GetNamespace(); ns != "grafana" {
		t.Errorf("dashboard in %q", ns)
	}
}

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Keyward's alerts and dashboard have one source each: the Prometheus rule
// file and the dashboard's JSON. monitoring writes from them the
// PrometheusRule of config/prometheus and the chart's copies, which its
// templates read with .Files.Get (not as templates: the alerts' annotations
// are Go templates of their own).
const (
	rulesSource     = "config/prometheus/keyward.rules.yaml"
	rulesObject     = "config/prometheus/prometheusrule.yaml"
	dashboardSource = "config/grafana/keyward.json"
	chartRules      = "files/keyward.rules.yaml"
	chartDashboard  = "files/keyward-dashboard.json"
)

func monitoring(chartDir string) error {
	rules, err := os.ReadFile(rulesSource)
	if err != nil {
		return err
	}
	var parsed struct {
		Groups []map[string]any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(rules, &parsed); err != nil || len(parsed.Groups) == 0 {
		return fmt.Errorf("%s: not a rule file with groups: %v", rulesSource, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, generatedHeader, "monitoring", rulesSource)
	b.WriteString(`# Keyward's alerts for the Prometheus Operator (docs/operations.md, "Alerts").
# Prometheus selects PrometheusRules by label (ruleSelector): add the label
# yours asks for, e.g. release: kube-prometheus-stack, in your overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: keyward
  namespace: keyward-system
  labels:
    app.kubernetes.io/name: keyward
    app.kubernetes.io/instance: keyward
    app.kubernetes.io/component: metrics
    app.kubernetes.io/part-of: keyward
spec:
`)
	for _, line := range strings.Split(strings.TrimRight(withoutLeadingComments(string(rules)), "\n"), "\n") {
		if line != "" {
			b.WriteString("  " + line)
		}
		b.WriteString("\n")
	}
	if err := os.WriteFile(rulesObject, b.Bytes(), 0o644); err != nil {
		return err
	}

	dashboard, err := os.ReadFile(dashboardSource)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(chartDir, "files"), 0o755); err != nil {
		return err
	}
	for out, data := range map[string][]byte{chartRules: rules, chartDashboard: dashboard} {
		if err := os.WriteFile(filepath.Join(chartDir, out), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// withoutLeadingComments drops the file's opening comment block (it speaks
// of the file, not of the object it is copied into).
func withoutLeadingComments(s string) string {
	lines := strings.Split(s, "\n")
	i := 0
	for i < len(lines) && (strings.HasPrefix(lines[i], "#") || strings.TrimSpace(lines[i]) == "") {
		i++
	}
	return strings.Join(lines[i:], "\n")
}

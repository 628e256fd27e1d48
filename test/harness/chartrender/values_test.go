package chartrender

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The Prometheus Operator's CRD, as helm template --api-versions names it.
const serviceMonitorAPI = "monitoring.coreos.com/v1/ServiceMonitor"

func render(t *testing.T, values map[string]any, apiVersions ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := Render(chartDir(t), "keyward", "keyward-system", values, apiVersions...)
	if err != nil {
		t.Fatal(err)
	}
	return objects(t, out)
}

func decode[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	data, _ := yaml.Marshal(u.Object)
	if err := yaml.UnmarshalStrict(data, &v); err != nil {
		t.Fatalf("%s does not decode strictly: %v", Key(u), err)
	}
	return &v
}

// values.schema.json rejects what would otherwise render something wrong.
func TestSchemaRejectsBadValues(t *testing.T) {
	for name, values := range map[string]map[string]any{
		"a misspelt top-level value":         {"replicas": 3},
		"a misspelt nested value":            {"podDisruptionBudget": map[string]any{"maxUnavialable": 1}},
		"replicaCount as a string":           {"replicaCount": "2"},
		"an unknown TLS mode":                {"verifier": map[string]any{"tls": map[string]any{"mode": "on"}}},
		"a port out of range":                {"verifier": map[string]any{"port": 70000}},
		"a digest that is not sha256":        {"image": map[string]any{"digest": "latest"}},
		"an env entry without a name":        {"extraEnv": []any{map[string]any{"value": "x"}}},
		"a mount without a path":             {"extraVolumeMounts": []any{map[string]any{"name": "x"}}},
		"a flag that is not one":             {"extraArgs": []any{"max-requeue=10m"}},
		"a Service type that does not exist": {"verifier": map[string]any{"service": map[string]any{"type": "Ingress"}}},
		"an eviction policy that is not one": {"podDisruptionBudget": map[string]any{"unhealthyPodEvictionPolicy": "Never"}},
		"a scrape interval without a unit":   {"metrics": map[string]any{"serviceMonitor": map[string]any{"interval": "30"}}},
		"a probe handler":                    {"livenessProbe": map[string]any{"exec": map[string]any{"command": []any{"true"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Render(chartDir(t), "keyward", "keyward-system", values)
			if err == nil {
				t.Fatalf("%v rendered", values)
			}
			if !strings.Contains(err.Error(), "schema") {
				t.Errorf("rejected, but not by the schema: %v", err)
			}
		})
	}
	_, err := Render(chartDir(t), "keyward", "keyward-system", map[string]any{"podDisruptionBudget": map[string]any{"minAvailable": 1}})
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("minAvailable and maxUnavailable together: %v", err)
	}
}

// The admission policies need admissionregistration.k8s.io/v1
// MutatingAdmissionPolicy, GA in Kubernetes 1.36: the chart refuses older
// clusters as helm install does (docs/operations.md, "Requirements").
func TestKubeVersion(t *testing.T) {
	for v, ok := range map[string]bool{"v1.35.4": false, "v1.36.0": true, "v1.37.2": true} {
		kv, err := chartutil.ParseKubeVersion(v)
		if err != nil {
			t.Fatal(err)
		}
		_, err = RenderFor(*kv, chartDir(t), "keyward", "keyward-system", nil)
		if (err == nil) != ok {
			t.Errorf("Kubernetes %s: rendered %v, want %v (%v)", v, err == nil, ok, err)
		}
	}
}

func TestDeploymentValues(t *testing.T) {
	objs := render(t, map[string]any{
		"image":                 map[string]any{"registry": "mirror.example:5000", "repository": "keyward/manager", "tag": "v1.2.3", "digest": "sha256:" + strings.Repeat("ab", 32)},
		"commonLabels":          map[string]any{"team": "platform"},
		"extraEnv":              []any{map[string]any{"name": "GOMEMLIMIT", "value": "200MiB"}},
		"extraVolumes":          []any{map[string]any{"name": "metrics-cert", "secret": map[string]any{"secretName": "keyward-metrics-cert"}}},
		"extraVolumeMounts":     []any{map[string]any{"name": "metrics-cert", "mountPath": "/etc/keyward/metrics-tls", "readOnly": true}},
		"podAnnotations":        map[string]any{"example.com/pod": "yes"},
		"deploymentAnnotations": map[string]any{"example.com/deployment": "yes"},
		"revisionHistoryLimit":  3,
		"strategy":              map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxSurge": 0, "maxUnavailable": 1}},
		"livenessProbe":         map[string]any{"initialDelaySeconds": 1, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 4},
		"readinessProbe":        map[string]any{"periodSeconds": 5},
		"extraObjects": []any{
			map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "{{ .Release.Name }}-extra"}},
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-a-string\n",
		},
		"verifier": map[string]any{"service": map[string]any{"type": "LoadBalancer", "annotations": map[string]any{"example.com/lb": "internal"}}},
		"metrics":  map[string]any{"service": map[string]any{"type": "NodePort", "annotations": map[string]any{"example.com/m": "1"}}},
	})
	d := deployment(t, objs)
	c := d.Spec.Template.Spec.Containers[0]
	if want := "mirror.example:5000/keyward/manager:v1.2.3@sha256:" + strings.Repeat("ab", 32); c.Image != want {
		t.Errorf("image %q, want %q", c.Image, want)
	}
	for _, o := range objs {
		if o.GetKind() != "ConfigMap" && o.GetLabels()["team"] != "platform" { // extraObjects are the user's own
			t.Errorf("%s lacks commonLabels", Key(o))
		}
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" && e.Value == "200MiB" }) {
		t.Errorf("env %v lacks GOMEMLIMIT", c.Env)
	}
	if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "keyward-metrics-cert" }) ||
		!slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/etc/keyward/metrics-tls" }) {
		t.Errorf("extra volume or mount missing: %v %v", d.Spec.Template.Spec.Volumes, c.VolumeMounts)
	}
	if d.Spec.Template.Annotations["example.com/pod"] != "yes" || d.Annotations["example.com/deployment"] != "yes" {
		t.Errorf("annotations: pod %v, deployment %v", d.Spec.Template.Annotations, d.Annotations)
	}
	if d.Spec.RevisionHistoryLimit == nil || *d.Spec.RevisionHistoryLimit != 3 {
		t.Errorf("revisionHistoryLimit %v", d.Spec.RevisionHistoryLimit)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxSurge.IntValue() != 0 || ru.MaxUnavailable.IntValue() != 1 {
		t.Errorf("strategy %+v", d.Spec.Strategy)
	}
	if p := c.LivenessProbe; p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.InitialDelaySeconds != 1 || p.PeriodSeconds != 2 || p.TimeoutSeconds != 3 || p.FailureThreshold != 4 {
		t.Errorf("liveness probe %+v", p)
	}
	if p := c.ReadinessProbe; p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.PeriodSeconds != 5 || p.InitialDelaySeconds != 5 { // merged over values.yaml, as helm does
		t.Errorf("readiness probe %+v", p)
	}
	if find(objs, "ConfigMap", "keyward-extra") == nil || find(objs, "ConfigMap", "from-a-string") == nil {
		t.Error("extraObjects not rendered (or not through tpl)")
	}
	for name, want := range map[string]string{"keyward-verifier": "LoadBalancer", "keyward-controller-manager-metrics": "NodePort"} {
		svc := decode[corev1.Service](t, find(objs, "Service", name))
		if string(svc.Spec.Type) != want || len(svc.Annotations) != 1 {
			t.Errorf("Service %s: type %s, annotations %v", name, svc.Spec.Type, svc.Annotations)
		}
	}
}

// Replicas spread over nodes by default, softly, and each constraint
// selects the manager's Pods unless it says otherwise.
func TestTopologySpread(t *testing.T) {
	d := deployment(t, render(t, nil))
	tsc := d.Spec.Template.Spec.TopologySpreadConstraints
	if len(tsc) != 1 || tsc[0].TopologyKey != "kubernetes.io/hostname" || tsc[0].WhenUnsatisfiable != corev1.ScheduleAnyway ||
		tsc[0].LabelSelector == nil || tsc[0].LabelSelector.MatchLabels["app.kubernetes.io/component"] != "manager" ||
		!slices.Equal(tsc[0].MatchLabelKeys, []string{"pod-template-hash"}) {
		t.Errorf("default topologySpreadConstraints %+v", tsc)
	}
	d = deployment(t, render(t, map[string]any{"topologySpreadConstraints": []any{
		map[string]any{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
			"labelSelector": map[string]any{"matchLabels": map[string]any{"custom": "yes"}}},
	}}))
	if tsc := d.Spec.Template.Spec.TopologySpreadConstraints; len(tsc) != 1 || tsc[0].LabelSelector.MatchLabels["custom"] != "yes" || len(tsc[0].LabelSelector.MatchLabels) != 1 {
		t.Errorf("a constraint's own labelSelector was not kept: %+v", tsc)
	}
	if d := deployment(t, render(t, map[string]any{"topologySpreadConstraints": []any{}})); d.Spec.Template.Spec.TopologySpreadConstraints != nil {
		t.Error("topologySpreadConstraints [] still spreads")
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	for name, tc := range map[string]struct {
		values map[string]any
		want   map[string]any // spec fields besides the selector; nil: no PDB
	}{
		"default":      {nil, map[string]any{"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"}},
		"disabled":     {map[string]any{"enabled": false}, nil},
		"minAvailable": {map[string]any{"minAvailable": "50%", "maxUnavailable": nil, "unhealthyPodEvictionPolicy": "IfHealthyBudget"}, map[string]any{"minAvailable": "50%", "unhealthyPodEvictionPolicy": "IfHealthyBudget"}},
	} {
		t.Run(name, func(t *testing.T) {
			var values map[string]any
			if tc.values != nil {
				values = map[string]any{"podDisruptionBudget": tc.values}
			}
			pdb := find(render(t, values), "PodDisruptionBudget", "")
			if tc.want == nil {
				if pdb != nil {
					t.Error("a PodDisruptionBudget although disabled")
				}
				return
			}
			if pdb == nil {
				t.Fatal("no PodDisruptionBudget")
			}
			spec, _, _ := unstructured.NestedMap(pdb.Object, "spec")
			sel, _, _ := unstructured.NestedStringMap(spec, "selector", "matchLabels")
			delete(spec, "selector")
			got, _ := yaml.Marshal(spec)
			want, _ := yaml.Marshal(tc.want)
			if string(got) != string(want) {
				t.Errorf("spec %s, want %s", got, want)
			}
			if sel["app.kubernetes.io/component"] != "manager" || sel["app.kubernetes.io/instance"] != "keyward" {
				t.Errorf("selector %v", sel)
			}
		})
	}
}

// The ServiceMonitor: skipped without its CRD; authorization from a Secret
// (the chart's scraper ServiceAccount's token by default) instead of the
// deprecated bearerTokenFile; tlsConfig, scrapeTimeout and relabelings from
// values; a selector that names each key once and matches the metrics
// Service.
func TestServiceMonitor(t *testing.T) {
	on := map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}}
	if objs := render(t, on); find(objs, "ServiceMonitor", "") != nil || find(objs, "ServiceAccount", "keyward-metrics-scraper") != nil {
		t.Error("a ServiceMonitor (or its scraper) rendered for a cluster without the monitoring.coreos.com CRD")
	}

	objs := render(t, on, serviceMonitorAPI)
	sm := find(objs, "ServiceMonitor", "keyward-controller-manager-metrics")
	if sm == nil {
		t.Fatal("no ServiceMonitor")
	}
	raw, _ := yaml.Marshal(sm.Object)
	if strings.Contains(string(raw), "bearerTokenFile") {
		t.Errorf("the ServiceMonitor has the deprecated bearerTokenFile:\n%s", raw)
	}
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	ep := endpoints[0].(map[string]any)
	if name, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name"); name != "keyward-metrics-scraper" {
		t.Errorf("authorization %v, want the scraper's token Secret", ep["authorization"])
	}
	secret := find(objs, "Secret", "keyward-metrics-scraper")
	if secret == nil || secret.Object["type"] != "kubernetes.io/service-account-token" || secret.GetAnnotations()["kubernetes.io/service-account.name"] != "keyward-metrics-scraper" {
		t.Errorf("scraper token Secret %v", secret)
	}
	if crb := find(objs, "ClusterRoleBinding", "keyward-metrics-scraper"); crb == nil {
		t.Error("the scraper is not bound to keyward-metrics-reader")
	} else if ref, _, _ := unstructured.NestedString(crb.Object, "roleRef", "name"); ref != "keyward-metrics-reader" {
		t.Errorf("scraper bound to %s", ref)
	}
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	svc := find(objs, "Service", "keyward-controller-manager-metrics")
	for k, v := range sel {
		if svc.GetLabels()[k] != v {
			t.Errorf("the selector's %s=%s does not match the metrics Service's labels %v", k, v, svc.GetLabels())
		}
	}
	if strings.Count(string(raw), "app.kubernetes.io/component") != 2 { // its own label, and once in the selector
		t.Errorf("app.kubernetes.io/component repeated:\n%s", raw)
	}

	objs = render(t, map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{
		"enabled": true, "namespace": "monitoring", "scrapeTimeout": "10s", "honorLabels": true,
		"relabelings":       []any{map[string]any{"action": "replace", "targetLabel": "cluster", "replacement": "prod"}},
		"metricRelabelings": []any{map[string]any{"action": "drop", "sourceLabels": []any{"__name__"}, "regex": "go_.*"}},
		"authorization":     map[string]any{"credentials": map[string]any{"name": "prometheus-token", "key": "token"}},
		"tlsConfig": map[string]any{"insecureSkipVerify": false, "serverName": "keyward-controller-manager-metrics.keyward-system.svc",
			"ca": map[string]any{"secret": map[string]any{"name": "keyward-metrics-ca", "key": "ca.crt"}}},
	}}}, serviceMonitorAPI)
	sm = find(objs, "ServiceMonitor", "")
	if sm.GetNamespace() != "monitoring" {
		t.Errorf("ServiceMonitor in %s", sm.GetNamespace())
	}
	if ns, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames"); !slices.Equal(ns, []string{"keyward-system"}) {
		t.Errorf("namespaceSelector %v, want the release namespace", ns)
	}
	endpoints, _, _ = unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	ep = endpoints[0].(map[string]any)
	if ep["scrapeTimeout"] != "10s" || ep["honorLabels"] != true || ep["relabelings"] == nil || ep["metricRelabelings"] == nil {
		t.Errorf("endpoint %v", ep)
	}
	if name, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name"); name != "prometheus-token" {
		t.Errorf("authorization %v", ep["authorization"])
	}
	if tls, _, _ := unstructured.NestedMap(ep, "tlsConfig"); tls["insecureSkipVerify"] != false || tls["serverName"] == nil || tls["ca"] == nil {
		t.Errorf("tlsConfig %v: the values' own", tls)
	}
	if find(objs, "Secret", "keyward-metrics-scraper") != nil {
		t.Error("a scraper token although the values name a Secret")
	}
}

// A CA without switching verification on would be a silent no-op.
func TestServiceMonitorCAVerifies(t *testing.T) {
	_, err := Render(chartDir(t), "keyward", "keyward-system", map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{
		"enabled": true, "tlsConfig": map[string]any{"ca": map[string]any{"secret": map[string]any{"name": "ca", "key": "ca.crt"}}}}}}, serviceMonitorAPI)
	if err == nil || !strings.Contains(err.Error(), "insecureSkipVerify") {
		t.Errorf("a CA with insecureSkipVerify still true: %v", err)
	}
}

// config/prometheus is the chart's ServiceMonitor and PrometheusRule for a
// release named keyward: the same monitor, scraper ServiceAccount, token
// Secret and binding, and the same rules.
func TestConfigPrometheusMatchesTheChart(t *testing.T) {
	root := filepath.Dir(filepath.Dir(chartDir(t)))
	opts := krusty.MakeDefaultOptions()
	resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "config", "prometheus"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := resMap.AsYaml()
	kustomize, err := Objects(string(body))
	if err != nil {
		t.Fatal(err)
	}
	var chart []*unstructured.Unstructured
	for _, o := range render(t, map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
		"prometheusRule": map[string]any{"enabled": true}}, serviceMonitorAPI) {
		if strings.Contains(o.GetName(), "metrics-scraper") || o.GetKind() == "ServiceMonitor" || o.GetKind() == "PrometheusRule" {
			chart = append(chart, o)
		}
	}
	if len(kustomize) != 5 || len(chart) != 5 {
		t.Errorf("config/prometheus has %d objects, the chart's monitoring %d; want 5 each", len(kustomize), len(chart))
	}
	for _, d := range Diff("config/prometheus", kustomize, "the chart", chart) {
		t.Error(d)
	}
}

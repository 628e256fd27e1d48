package chartrender

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"keyward.dev/keyward/internal/devenv/controlplane"
)

func chartDir(t *testing.T) string {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return Dir(root)
}

func objects(t *testing.T, stream string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(stream, "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("rendering is not YAML: %v\n%s", err, doc)
		}
		if len(u.Object) != 0 {
			out = append(out, u)
		}
	}
	return out
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	return nil
}

func deployment(t *testing.T, objs []*unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	u := find(objs, "Deployment", "")
	if u == nil {
		t.Fatal("no Deployment rendered")
	}
	var d appsv1.Deployment
	data, _ := yaml.Marshal(u.Object)
	if err := yaml.UnmarshalStrict(data, &d); err != nil {
		t.Fatalf("the Deployment does not decode strictly: %v", err)
	}
	return &d
}

func TestLint(t *testing.T) {
	for name, values := range map[string]map[string]any{
		"defaults":                         nil,
		"one replica, no metrics, no CRDs": {"replicaCount": 1, "metrics": map[string]any{"enabled": false}, "crds": map[string]any{"install": false}},
		"service monitor":                  {"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}},
		"namespace, no PDB, no spread":     {"namespace": map[string]any{"create": true}, "podDisruptionBudget": map[string]any{"enabled": false}, "topologySpreadConstraints": []any{}},
	} {
		t.Run(name, func(t *testing.T) {
			for _, m := range Lint(chartDir(t), "keyward-system", values) {
				t.Errorf("helm lint: %s", m)
			}
		})
	}
}

// kustomizeBuild is `kustomize build config/default`.
func kustomizeBuild(t *testing.T, root string) []*unstructured.Unstructured {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(string(body))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// One set of objects, three ways to install: the chart with its defaults
// (release keyward in keyward-system, namespace.create on), dist/install.yaml
// and kustomize's config/default render the same objects, field by field,
// Helm's own labels and annotations aside (docs/operations.md, "Install").
func TestThreeWaysInstallTheSameObjects(t *testing.T) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(chartDir(t), "keyward", "keyward-system", map[string]any{"namespace": map[string]any{"create": true}})
	if err != nil {
		t.Fatal(err)
	}
	chart := objects(t, out)
	data, err := os.ReadFile(filepath.Join(root, "dist", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	installer, err := Objects(string(data))
	if err != nil {
		t.Fatal(err)
	}
	kustomize := kustomizeBuild(t, root)
	for _, d := range Diff("dist/install.yaml", installer, "the chart", chart) {
		t.Error(d)
	}
	for _, d := range Diff("config/default", kustomize, "dist/install.yaml", installer) {
		t.Error(d)
	}
	for _, kind := range []string{"Namespace", "PodDisruptionBudget", "Deployment"} {
		if find(installer, kind, "") == nil {
			t.Errorf("no %s in dist/install.yaml", kind)
		}
	}
	if ns := find(installer, "Namespace", "keyward-system"); ns == nil || ns.GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("the Namespace lacks its Pod Security label: %v", ns)
	}
}

// With its defaults, the chart runs the manager as config/default does.
func TestDefaults(t *testing.T) {
	out, err := Render(chartDir(t), "keyward", "keyward-system", nil)
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out)
	if find(objs, "Namespace", "") != nil {
		t.Error("a Namespace by default: helm install --create-namespace would conflict with it")
	}
	d := deployment(t, objs)
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "keyward/manager:dev" {
		t.Errorf("image %q, want the Makefile's keyward/manager:dev", c.Image)
	}
	for _, a := range []string{"--leader-elect", "--leader-election-namespace=keyward-system", "--metrics-bind-address=:8443",
		"--metrics-secure=true", "--api-keys-enabled-by-default=false", "--health-probe-bind-address=:8081",
		"--verify-bind-address=:8082", "--verify-grpc-bind-address=:8083",
		"--tokens=true", "--token-allow-plaintext=false", "--verify-tls=self-signed", "--verify-service-name=keyward-verifier",
		"--verify-tls-secret=keyward-verifier-tls", "--verify-tls-ca-configmap=keyward-verifier-ca"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %s", c.Args, a)
		}
	}
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--token-issuer") }) {
		t.Errorf("args %q set --token-issuer: the manager derives it from how it serves", c.Args)
	}
	if v := d.Spec.Template.Spec.Volumes; len(v) != 1 || v[0].EmptyDir == nil || len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/tmp" {
		t.Errorf("no writable /tmp for the self-signed certificate: %v %v", c.VolumeMounts, v)
	}
	if find(objs, "Role", "keyward-verifier-tls") == nil || find(objs, "RoleBinding", "keyward-verifier-tls") == nil {
		t.Error("no Role for the CA ConfigMap")
	}
	ps, sc := d.Spec.Template.Spec.SecurityContext, c.SecurityContext
	switch {
	case ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot:
		t.Error("pod does not run as non-root")
	case ps.SeccompProfile == nil || ps.SeccompProfile.Type != "RuntimeDefault":
		t.Error("pod seccomp profile is not RuntimeDefault")
	case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem is not read-only")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation is allowed")
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
		t.Error("capabilities are not dropped")
	}
	if crd := find(objs, "CustomResourceDefinition", "accesskeys.keyward.dev"); crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
		t.Error("the CRDs are not kept on helm uninstall by default")
	}
	if find(objs, "ServiceMonitor", "") != nil {
		t.Error("a ServiceMonitor by default (its CRD may be missing)")
	}
}

func TestValues(t *testing.T) {
	out, err := Render(chartDir(t), "acme", "platform", map[string]any{
		"replicaCount":            1,
		"image":                   map[string]any{"repository": "registry.example/keyward", "tag": "v1.2.3"},
		"apiKeysEnabledByDefault": true,
		"extraArgs":               []any{"--max-requeue=10m"},
		"resources":               map[string]any{"limits": map[string]any{"memory": "1Gi"}},
		"metrics":                 map[string]any{"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}}},
		"crds":                    map[string]any{"keep": false},
		"rbac":                    map[string]any{"userRoles": false},
		"admissionPolicies":       map[string]any{"enabled": false},
		"verifier": map[string]any{"grpcPort": 0, "trustedProxies": "10.0.0.0/8", "tokenIssuer": "https://keys.example",
			"tls": map[string]any{"mode": "cert-dir", "secretName": "verify-tls"}},
	}, serviceMonitorAPI)
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out)
	d := deployment(t, objs)
	c := d.Spec.Template.Spec.Containers[0]
	if d.Name != "acme-keyward-controller-manager" || d.Namespace != "platform" {
		t.Errorf("Deployment %s/%s", d.Namespace, d.Name)
	}
	if c.Image != "registry.example/keyward:v1.2.3" || *d.Spec.Replicas != 1 {
		t.Errorf("image %s, replicas %d", c.Image, *d.Spec.Replicas)
	}
	for _, a := range []string{"--api-keys-enabled-by-default=true", "--max-requeue=10m", "--leader-election-namespace=platform",
		"--verify-grpc-bind-address=0", "--trusted-proxies=10.0.0.0/8", "--verify-tls=cert-dir", "--verify-cert-dir=/etc/keyward/verify-tls",
		"--verify-service-name=acme-keyward-verifier", "--token-issuer=https://keys.example"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %s", c.Args, a)
		}
	}
	if c.Resources.Limits.Memory().String() != "1Gi" {
		t.Errorf("memory limit %s", c.Resources.Limits.Memory())
	}
	if find(objs, "Role", "acme-keyward-verifier-tls") != nil {
		t.Error("a Role for the self-signed CA ConfigMap with tls.mode cert-dir")
	}
	if v := d.Spec.Template.Spec.Volumes; len(c.VolumeMounts) != 2 || len(v) != 2 || v[1].Secret == nil || v[1].Secret.SecretName != "verify-tls" {
		t.Errorf("the verifier's TLS Secret is not mounted: %v %v", c.VolumeMounts, d.Spec.Template.Spec.Volumes)
	}
	if svc := find(objs, "Service", "acme-keyward-verifier"); svc == nil {
		t.Error("no verifier Service")
	} else if ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports"); len(ports) != 1 {
		t.Errorf("verifier Service ports %v, want only http with grpcPort 0", ports)
	}
	if pdb := find(objs, "PodDisruptionBudget", ""); pdb == nil {
		t.Error("no PodDisruptionBudget")
	} else if v, _, _ := unstructured.NestedFieldNoCopy(pdb.Object, "spec", "maxUnavailable"); v != int64(1) && v != float64(1) {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1: with one replica a drain must not wait forever", v)
	}
	sm := find(objs, "ServiceMonitor", "acme-keyward-controller-manager-metrics")
	if sm == nil || sm.GetLabels()["release"] != "prom" {
		t.Errorf("ServiceMonitor %v", sm)
	}
	for _, gone := range []string{"keyward-developer", "keyward-stamp-owner"} {
		for _, o := range objs {
			if o.GetName() == gone {
				t.Errorf("%s %s rendered although switched off", o.GetKind(), gone)
			}
		}
	}
	if crd := find(objs, "CustomResourceDefinition", "accesskeys.keyward.dev"); crd == nil || crd.GetAnnotations()["helm.sh/resource-policy"] != "" {
		t.Error("crds.keep=false still keeps the CRDs")
	}
	crb := find(objs, "ClusterRoleBinding", "acme-keyward-manager")
	if crb == nil {
		t.Fatal("no ClusterRoleBinding acme-keyward-manager: a second release would take over the first one's")
	}
	subjects, _, _ := unstructured.NestedSlice(crb.Object, "subjects")
	if sa := subjects[0].(map[string]any); sa["name"] != "acme-keyward-controller-manager" || sa["namespace"] != "platform" {
		t.Errorf("binding subject %v", sa)
	}
	if find(objs, "ClusterRole", "acme-keyward-manager") == nil {
		t.Error("no ClusterRole acme-keyward-manager")
	}
}

// TestVerifierTLSModes: tls.mode off serves plaintext (an http Service port,
// no CA Role, the token endpoints' plaintext switch passed on); an unknown
// mode, or cert-dir without a Secret, does not render.
func TestVerifierTLSModes(t *testing.T) {
	out, err := Render(chartDir(t), "acme", "platform", map[string]any{
		"verifier": map[string]any{"tls": map[string]any{"mode": "off"}, "tokenAllowPlaintext": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out)
	c := deployment(t, objs).Spec.Template.Spec.Containers[0]
	for _, a := range []string{"--verify-tls=off", "--token-allow-plaintext=true"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %s", c.Args, a)
		}
	}
	if find(objs, "Role", "acme-keyward-verifier-tls") != nil {
		t.Error("a Role for the CA ConfigMap with TLS off")
	}
	svc := find(objs, "Service", "acme-keyward-verifier")
	if ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports"); len(ports) == 0 || ports[0].(map[string]any)["name"] != "http" {
		t.Errorf("verifier Service ports %v, want http first with TLS off", ports)
	}
	for _, tls := range []map[string]any{{"mode": "on"}, {"mode": "cert-dir"}} {
		if _, err := Render(chartDir(t), "acme", "platform", map[string]any{"verifier": map[string]any{"tls": tls}}); err == nil {
			t.Errorf("verifier.tls %v rendered", tls)
		}
	}
}

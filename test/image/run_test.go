//go:build image

package image

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"keyward.dev/keyward/internal/devenv/controlplane"
	"keyward.dev/keyward/test/harness/testenv"
)

const (
	managerSA        = "system:serviceaccount:keyward-system:keyward-controller-manager"
	kubeconfigInPod  = "/var/run/keyward/kubeconfig"
	issueTimeout     = 90 * time.Second
	pollInterval     = 200 * time.Millisecond
	deploymentName   = "keyward-controller-manager"
	managerContainer = "manager"
)

// deployment is config/manager's Deployment as `kubectl apply -k
// config/default` installs it (kustomize rendered, images: applied).
func deployment(t *testing.T, kubectl func(...string) string) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	rendered := kubectl("kustomize", repoFile("config", "default"))
	for doc := range strings.SplitSeq(rendered, "\n---\n") {
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil || d.Kind != "Deployment" || d.Name != deploymentName {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == managerContainer {
				return &d, c
			}
		}
	}
	t.Fatalf("no Deployment %s with a container %q in `kubectl kustomize config/default`", deploymentName, managerContainer)
	return nil, corev1.Container{}
}

// podmanSecurityFlags turns the Deployment's security context into podman
// flags, and fails the test when the Deployment no longer asks for what the
// image is tested with (non-root, read-only root, no capabilities, no
// privilege escalation).
func podmanSecurityFlags(t *testing.T, d *appsv1.Deployment, c corev1.Container) []string {
	t.Helper()
	pod, sc := d.Spec.Template.Spec.SecurityContext, c.SecurityContext
	switch {
	case pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.RunAsUser == nil || pod.RunAsGroup == nil:
		t.Fatalf("the Deployment's pod securityContext must set runAsNonRoot, runAsUser and runAsGroup: %+v", pod)
	case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Fatalf("the manager container must have readOnlyRootFilesystem: true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Fatalf("the manager container must have allowPrivilegeEscalation: false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Fatalf("the manager container must drop ALL capabilities and add none: %+v", sc.Capabilities)
	}
	flags := []string{
		"--read-only",
		"--cap-drop=ALL",
		"--security-opt=no-new-privileges",
		fmt.Sprintf("--user=%d:%d", *pod.RunAsUser, *pod.RunAsGroup),
	}
	// The memory limit too, so start-up and issuance fit in it.
	if m, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		flags = append(flags, fmt.Sprintf("--memory=%d", m.Value()))
	}
	return flags
}

// managerArgs are the Deployment's args with every listen address
// (--*-bind-address, unless 0, which switches a listener off) moved to a free
// loopback port — the container shares the host's network —, plus the
// kubeconfig. It returns the args and the probe and metrics addresses.
func managerArgs(t *testing.T, c corev1.Container) (args []string, probe, metrics string) {
	t.Helper()
	seen := map[string]string{}
	for _, a := range c.Args {
		name, value, hasValue := strings.Cut(a, "=")
		switch {
		case name == "--kubeconfig":
			t.Fatalf("the Deployment passes %s; the test cannot add its own", a)
		case strings.HasSuffix(name, "-bind-address") && !hasValue:
			t.Fatalf("the Deployment's arg %q: the test needs the --flag=value form to move the port", a)
		case strings.HasSuffix(name, "-bind-address") && value != "0":
			a = name + "=" + freeAddr(t)
		}
		seen[name] = strings.TrimPrefix(a, name+"=")
		args = append(args, a)
	}
	probe, metrics = seen["--health-probe-bind-address"], seen["--metrics-bind-address"]
	if probe == "" || probe == "0" || metrics == "" || metrics == "0" {
		t.Fatalf("the Deployment's args %q must set --health-probe-bind-address and --metrics-bind-address", c.Args)
	}
	return append(args, "--kubeconfig="+kubeconfigInPod), probe, metrics
}

// podmanEnv gives the container the Deployment's environment: literal values
// as they are, downward-API fields as a kubelet would fill them for a Pod of
// this name.
func podmanEnv(t *testing.T, d *appsv1.Deployment, c corev1.Container, podName string) []string {
	t.Helper()
	var flags []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			switch {
			case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
				v = podName
			case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
				v = d.Namespace
			default:
				t.Fatalf("env %s: the test does not know how to fill %+v", e.Name, e.ValueFrom)
			}
		}
		flags = append(flags, "--env="+e.Name+"="+v)
	}
	return flags
}

// metricsGet GETs /metrics over HTTPS (the manager's certificate is
// self-signed) with a bearer token unless token is empty.
func metricsGet(addr, token string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed
	}}
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), err
}

func httpStatus(url string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), err
}

// The image runs as config/manager's Deployment runs it — its args, its
// environment, its security context (read-only root, no capabilities, no
// privilege escalation, user 65532) — against a real control plane, with the
// rights `kubectl apply -k config/default` gives its ServiceAccount: it issues
// a key into a Secret, answers its probes, serves its build version, prints
// no key material, and stops on SIGTERM within the Pod's grace period with
// exit code 0.
func TestImageRunsAsTheDeployment(t *testing.T) {
	root := testenv.RepoRoot()
	bin, err := controlplane.BinDir(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	adminKubeconfig := filepath.Join(dir, "admin.kubeconfig")
	kubectlIn := func(stdin string, args ...string) (string, string, error) {
		cmd := exec.Command(filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig=" + adminKubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	kubectl := func(args ...string) string {
		t.Helper()
		out, errOut, err := kubectlIn("", args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	}

	d, c := deployment(t, kubectl)
	if c.Image != defaultImage {
		t.Errorf("config/manager deploys image %q; the Makefile builds %q by default", c.Image, defaultImage)
	}
	security := podmanSecurityFlags(t, d, c)
	args, probe, metrics := managerArgs(t, c)
	grace := int64(30)
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	t.Logf("Deployment: image %s, args %q, grace period %ds", c.Image, c.Args, grace)

	start := time.Now()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	t.Logf("control plane up in %s", time.Since(start).Round(time.Millisecond))
	if err := controlplane.WriteKubeconfig(adminKubeconfig, "image-test", env.Config); err != nil {
		t.Fatal(err)
	}
	kubectl("apply", "--server-side", "--force-conflicts", "-k", repoFile("config", "default"))

	// The manager's kubeconfig impersonates its ServiceAccount, as in
	// test/e2e: it has the rights config/default gives the manager and no
	// more. It is mounted read-only and readable only by the container's user.
	asManager := rest.CopyConfig(env.Config)
	asManager.Impersonate = rest.ImpersonationConfig{
		UserName: managerSA,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:keyward-system", "system:authenticated"},
	}
	managerKubeconfig := filepath.Join(dir, "manager.kubeconfig")
	if err := controlplane.WriteKubeconfig(managerKubeconfig, "keyward-manager", asManager); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(managerKubeconfig, 65532, 65532); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(managerKubeconfig, 0o400); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Chmod(managerKubeconfig, 0o444); err != nil { // rootless podman maps users
		t.Fatal(err)
	}

	name := "keyward-image-test-" + runID
	podName := deploymentName + "-image-test"
	run := []string{"run", "--detach", "--name", name, "--label", "keyward.dev/image-test=" + runID,
		"--network=host", "--volume=" + managerKubeconfig + ":" + kubeconfigInPod + ":ro"}
	run = append(run, security...)
	run = append(run, podmanEnv(t, d, c, podName)...)
	run = append(run, imageRef)
	run = append(run, args...)
	t.Cleanup(func() { _, _, _ = podman("rm", "--force", name) })
	logs := func() string { out, errOut, _ := podman("logs", name); return out + errOut }

	// Objects go in right after the container starts, so the time to the
	// first key counts the manager's start-up, leader election and cache sync.
	started := time.Now()
	mustPodman(t, run...)
	t.Logf("podman %s", strings.Join(run, " "))
	ns := fmt.Sprintf("image-%s", runID)
	kubectl("create", "namespace", ns)
	manifests := `apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default}
spec: {apiKeysEnabled: true}
---
apiVersion: keyward.dev/v1alpha1
kind: Application
metadata: {name: image-test}
spec:
  displayName: Image test
  group: Developers
  scopes: [{name: devices, access: ReadOnly}]
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: image-test-key}
spec: {application: image-test}
`
	if _, errOut, err := kubectlIn(manifests, "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, errOut)
	}

	failWithLogs := func(t *testing.T, format string, args ...any) {
		t.Helper()
		state, _, _ := podman("inspect", "--format", "{{.State.Status}} exit {{.State.ExitCode}}", name)
		writeManagerLog(t, logs())
		t.Fatalf(format+"\ncontainer: %s (log: bin/image/manager.log)", append(args, strings.TrimSpace(state))...)
	}
	running := func() error {
		out, _, err := podman("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(out, "true") {
			return fmt.Errorf("%w: the container is not running (running, exit code: %s)", errGaveUp, strings.TrimSpace(out))
		}
		return nil
	}

	keyIssued := t.Run("issues a key into a Secret", func(t *testing.T) {
		var secret string
		ok, err := eventually(issueTimeout, pollInterval, func() (bool, error) {
			if err := running(); err != nil {
				return false, err
			}
			out, _, err := kubectlIn("", "get", "-n", ns, "accesskey/image-test-key",
				"-o", "jsonpath={.status.phase} {.status.secretName}")
			if err != nil {
				return false, err
			}
			phase, s, _ := strings.Cut(out, " ")
			if phase != "Active" || s == "" {
				return false, fmt.Errorf("phase %q secret %q", phase, s)
			}
			if _, _, err := kubectlIn("", "get", "-n", ns, "secret/"+s, "-o", "name"); err != nil {
				return false, err
			}
			secret = s
			return true, nil
		})
		if !ok {
			failWithLogs(t, "no Active key with its Secret (waited up to %s): %v", issueTimeout, err)
		}
		measured(t, "time from container start to the first issued key (Active, Secret %s present): %s",
			secret, time.Since(started).Round(10*time.Millisecond))
		if got := kubectl("get", "-n", ns, "secret/"+secret, "-o", "jsonpath={.type}"); got != "keyward.dev/access-key" {
			t.Errorf("Secret type %q, want keyward.dev/access-key", got)
		}

		// The key itself is compared, never printed.
		var s corev1.Secret
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: secret}, &s); err != nil {
			t.Fatal(err)
		}
		key := string(s.Data["accessKey"])
		keyMaterial = append(keyMaterial, key)
		if !strings.HasPrefix(key, "kw_") {
			t.Errorf("the Secret's accessKey is not a kw_ key (%d bytes)", len(key))
		}
		if key != "" && strings.Contains(logs(), key) {
			t.Errorf("the container's log contains the key material")
		}
	})

	if !keyIssued {
		return
	}

	t.Run("runs as 65532 with no capabilities, no new privileges and a read-only root", func(t *testing.T) {
		// The process itself, as the kernel sees it from the host.
		pid := strings.TrimSpace(mustPodman(t, "inspect", "--format", "{{.State.Pid}}", name))
		status, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			t.Fatalf("reading the manager's /proc status: %v", err)
		}
		fields := map[string]string{}
		for line := range strings.Lines(string(status)) {
			k, v, _ := strings.Cut(line, ":")
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
		want := map[string]string{
			"Uid": "65532 65532 65532 65532", "Gid": "65532 65532 65532 65532",
			"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
			"CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1",
		}
		for k, v := range want {
			if fields[k] != v {
				t.Errorf("the manager's %s is %q, want %q", k, fields[k], v)
			}
		}
		t.Logf("manager process %s: Uid %s, CapEff %s, NoNewPrivs %s", pid, fields["Uid"], fields["CapEff"], fields["NoNewPrivs"])
		if ro := strings.TrimSpace(mustPodman(t, "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name)); ro != "true" {
			t.Errorf("ReadonlyRootfs %s, want true", ro)
		}
		mounts, err := os.ReadFile("/proc/" + pid + "/mounts")
		if err != nil {
			t.Fatal(err)
		}
		root := ""
		for line := range strings.Lines(string(mounts)) {
			if f := strings.Fields(line); len(f) >= 4 && f[1] == "/" {
				root = f[3] // the last mount on / is the one the process sees
			}
		}
		if !slices.Contains(strings.Split(root, ","), "ro") {
			t.Errorf("the container's root is mounted %q, want ro", root)
		}
		t.Logf("root filesystem mounted %s", strings.Split(root, ",")[0])
	})

	t.Run("answers its probes and serves its build version", func(t *testing.T) {
		ok, err := eventually(issueTimeout, pollInterval, func() (bool, error) {
			if err := running(); err != nil {
				return false, err
			}
			code, body, err := httpStatus("http://" + probe + "/readyz")
			if err != nil || code != http.StatusOK {
				return false, fmt.Errorf("/readyz: %d %v %s", code, err, strings.TrimSpace(body))
			}
			return true, nil
		})
		if !ok {
			failWithLogs(t, "/readyz on %s never answered 200: %v", probe, err)
		}
		measured(t, "GET http://%s/readyz: 200, %s after container start", probe, time.Since(started).Round(10*time.Millisecond))
		for _, path := range []string{"/healthz", "/readyz?verbose"} {
			code, body, err := httpStatus("http://" + probe + path)
			if err != nil || code != http.StatusOK {
				t.Errorf("GET %s: %d %v", path, code, err)
			}
			if path == "/readyz?verbose" {
				for _, check := range []string{"[+]informers-synced ok", "[+]watches ok"} {
					if !strings.Contains(body, check) {
						t.Errorf("/readyz?verbose lacks %q:\n%s", check, body)
					}
				}
			}
		}
		// Metrics are HTTPS for keyward-metrics-reader only, as the
		// Deployment serves them.
		if code, _, err := metricsGet(metrics, ""); err != nil || code != http.StatusUnauthorized {
			t.Errorf("GET https://%s/metrics without a token: %d %v, want 401", metrics, code, err)
		}
		kubectl("-n", "keyward-system", "create", "serviceaccount", "image-test-scraper")
		kubectl("create", "clusterrolebinding", "image-test-scraper", "--clusterrole=keyward-metrics-reader",
			"--serviceaccount=keyward-system:image-test-scraper")
		code, body, err := metricsGet(metrics, kubectl("-n", "keyward-system", "create", "token", "image-test-scraper"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET https://%s/metrics as keyward-metrics-reader: %d %v", metrics, code, err)
		}
		var info string
		for line := range strings.Lines(body) {
			if strings.HasPrefix(line, "keyward_build_info{") {
				info = strings.TrimSpace(line)
			}
		}
		for _, want := range []string{`version="` + wantVersion + `"`, `revision="` + wantRevision + `"`} {
			if !strings.Contains(info, want) {
				t.Errorf("keyward_build_info %q lacks %s: the binary is not stamped as the image is labelled", info, want)
			}
		}
		t.Logf("%s", info)
	})

	t.Run("stops on SIGTERM within its grace period with exit code 0", func(t *testing.T) {
		if err := running(); err != nil {
			failWithLogs(t, "before SIGTERM: %v", err)
		}
		if out, _, err := podman("stats", "--no-stream", "--format", "{{.MemUsage}}", name); err == nil {
			measured(t, "memory in use before SIGTERM: %s", strings.TrimSpace(out))
		}
		// podman stop sends the image's stop signal (SIGTERM), waits up to the
		// grace period, then SIGKILLs — what a kubelet does.
		begin := time.Now()
		mustPodman(t, "stop", "--time", strconv.FormatInt(grace, 10), name)
		took := time.Since(begin)
		out := mustPodman(t, "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name)
		code, _, _ := strings.Cut(strings.TrimSpace(out), " ")
		measured(t, "exit after SIGTERM: %s (grace period %ds), exit code %s", took.Round(10*time.Millisecond), grace, code)
		writeManagerLog(t, logs())
		if took >= time.Duration(grace)*time.Second {
			t.Errorf("the manager took %s to stop: podman had to SIGKILL it after the %ds grace period", took, grace)
		}
		if code != "0" {
			t.Errorf("exit code %s after SIGTERM, want 0 (log: bin/image/manager.log)", code)
		}
	})
}

// keyMaterial are the keys the test has read from Secrets, to be kept out of
// anything it writes.
var keyMaterial []string

// writeManagerLog keeps the container's log in bin/image/manager.log, with
// any key the test has seen redacted (the key test fails if there is one).
func writeManagerLog(t *testing.T, log string) {
	t.Helper()
	for _, k := range keyMaterial {
		if k != "" {
			log = strings.ReplaceAll(log, k, "[REDACTED KEY]")
		}
	}
	path := repoFile("bin", "image", "manager.log")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Log(err)
		return
	}
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Log(err)
	}
}

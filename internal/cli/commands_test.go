package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/version"
)

func TestStatusOutput(t *testing.T) {
	s := &script{t: t, w: newWorld(t, nil)}
	s.run("", false, "status", "-n", "shop")
	s.run("", false, "status", "-A")
	s.run("", false, "status", "web", "-n", "shop")
	s.run("", false, "status", "ci", "-n", "shop")
	s.run("", false, "status", "-n", "empty")
	s.golden("status")

	j := &script{t: t, w: s.w}
	j.run("", false, "status", "web", "-n", "shop", "-o", "json")
	j.run("", false, "status", "-n", "lab", "-o", "yaml")
	j.golden("status_structured")
}

// The printing flags are kubectl get's: -o wide|name|jsonpath|custom-columns|
// go-template, --no-headers, --show-labels, -L; and -l selects.
func TestKubectlOutputs(t *testing.T) {
	s := &script{t: t, w: newWorld(t, nil)}
	s.run("", false, "status", "-n", "shop", "-o", "wide")
	s.run("", false, "status", "-n", "shop", "--no-headers")
	s.run("", false, "status", "-A", "-l", "team=payments")
	s.run("", false, "status", "-n", "shop", "-l", "team in (payments,analytics),tier!=web", "--show-labels")
	s.run("", false, "status", "-n", "shop", "-L", "team")
	s.run("", false, "status", "-n", "shop", "-l", "team=nobody")
	s.run("", false, "status", "-n", "shop", "-o", "name")
	s.run("", false, "status", "web", "-n", "shop", "-o", "jsonpath={.status.keyID}")
	s.run("", false, "status", "web", "-n", "shop", "-o", "wide")
	s.run("", false, "status", "-n", "shop", "-o", "custom-columns=NAME:.metadata.name,KEY:.status.keyID,OWNER:.spec.owner")
	s.run("", false, "status", "-n", "lab", "-o", "custom-columns=NAME:.metadata.name,EXPIRES:.status.expiresAt", "--no-headers")
	s.run("", false, "status", "-n", "lab", "-o", "go-template={{range .items}}{{.metadata.name}} {{.status.phase}}{{\"\\n\"}}{{end}}")
	s.run("", false, "expiring", "-A", "-o", "wide")
	s.run("", false, "expiring", "-A", "-l", "team=payments", "-o", "name")
	s.run("", false, "expiring", "-n", "shop", "-l", "team=analytics")
	s.run("", false, "status", "-n", "shop", "-o", "xml")
	s.run("", false, "status", "web", "-n", "shop", "-l", "team=payments")
	s.run("", false, "status", "-n", "shop", "-l", "team in (")
	noKeyMaterial(t, s.b.String())
	s.golden("kubectl_outputs")
}

func TestExpiringOutput(t *testing.T) {
	s := &script{t: t, w: newWorld(t, nil)}
	s.run("", false, "expiring", "-A")
	s.run("", false, "expiring", "-n", "shop", "--within", "3d")
	s.run("", false, "expiring", "-n", "shop", "--within", "1h")
	s.run("", false, "expiring", "-A", "--within", "1d", "-o", "json")
	s.golden("expiring")
}

func TestWhois(t *testing.T) {
	forged := keyformat.Key{ID: "forgedidabcdefgh", Secret: webKey.Secret}
	wrongSecret := keyformat.Key{ID: webKey.ID, Secret: oldKey.Secret}
	s := &script{t: t, w: newWorld(t, nil)}
	s.run(webKey.Plaintext()+"\n", false, "whois")
	s.run(oldKey.Plaintext(), false, "whois", "-n", "shop", "-o", "json")
	s.run(webKey.Plaintext()+"\n", true, "whois", "-n", "lab")
	s.run(forged.Plaintext(), false, "whois")
	s.run(wrongSecret.Plaintext(), false, "whois")
	s.run("kw_nope\n", false, "whois")
	s.run(webKey.Plaintext()[:len(webKey.Plaintext())-1]+"a", false, "whois")
	s.run("", false, "whois")
	s.run("", false, "whois", "kw_key_as_argument")
	// Revocation clears the hash but keeps the key ID.
	s.run(keyformat.Key{ID: "leakedkeyidabcde", Secret: oldKey.Secret}.Plaintext(), false, "whois")
	noKeyMaterial(t, s.b.String())
	s.golden("whois")

	// A user who may list AccessKeys only in some namespaces searches
	// those; one who may not list namespaces either, the current one.
	n := &script{t: t, w: newWorld(t, func(w *world) { w.forbidAll, w.forbidIn = true, map[string]bool{"vault": true} })}
	n.run(webKey.Plaintext(), false, "whois")
	n.run(forged.Plaintext(), false, "whois")
	n.w.forbidNamespaces = true
	n.run(webKey.Plaintext(), false, "whois")
	n.run(webKey.Plaintext(), false, "whois", "-n", "shop")
	n.run(webKey.Plaintext(), false, "whois", "-n", "vault")
	n.w.forbidIn["default"] = true
	n.run(webKey.Plaintext(), false, "whois")
	noKeyMaterial(t, n.b.String())
	n.golden("whois_limited_rights")
}

func TestReveal(t *testing.T) {
	w := newWorld(t, nil)
	r := w.run("", false, "reveal", "web", "-n", "shop")
	if r.code != 0 || r.stderr != "" || r.stdout != webKey.Plaintext()+"\n" {
		t.Fatalf("reveal: exit %d, stderr %q; stdout is the key: %v", r.code, r.stderr, r.stdout == webKey.Plaintext()+"\n")
	}
	// Everything below must refuse without printing key material.
	s := &script{t: t, w: w}
	s.run("", false, "reveal", "ci", "-n", "shop")
	s.run("", false, "reveal", "leaked", "-n", "shop")
	s.run("", false, "reveal", "paused", "-n", "shop")
	s.run("", false, "reveal", "nope", "-n", "shop")
	s.run("", false, "reveal", "-n", "shop")
	f := newWorld(t, func(w *world) { w.forbidSecrets = true })
	s.b.WriteString(f.run("", false, "reveal", "web", "-n", "shop").transcript("", "reveal", "web", "-n", "shop", "--as", "erin"))
	noKeyMaterial(t, s.b.String())
	s.golden("reveal_refused")
}

func TestCreate(t *testing.T) {
	w := newWorld(t, nil)
	r := w.run("", false, "create", "new", "-n", "shop", "--application", "portal", "--description", "for the shop", "--expires-in", "90d")
	if r.code != 0 || r.stdout != createdKey.Plaintext()+"\n" {
		t.Fatalf("create: exit %d, stderr %q; stdout is the key: %v", r.code, r.stderr, r.stdout == createdKey.Plaintext()+"\n")
	}
	if strings.Contains(r.stderr, createdKey.Secret) {
		t.Fatal("the key reached standard error")
	}
	if want := "accesskey shop/new created for application portal (owner dana, key ID createdk). The key follows on standard output: store it now.\n"; r.stderr != want {
		t.Fatalf("stderr %q, want %q", r.stderr, want)
	}
	var k keyward.AccessKey
	if err := w.c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "new"}, &k); err != nil {
		t.Fatal(err)
	}
	if k.Spec.Application != "portal" || k.Spec.Description != "for the shop" || k.Spec.ExpiresAt == nil || *k.Spec.ExpiresAt != "2027-02-23T12:00:00Z" || k.Spec.Owner != "dana" {
		t.Fatalf("created spec %+v", k.Spec)
	}

	// Everything below must fail without printing key material.
	s := &script{t: t, w: w}
	s.run("", false, "create", "web", "-n", "shop", "--application", "portal")
	s.run("", false, "create", "lost", "-n", "shop", "--application", "missing-app")
	s.run("", false, "create", "nameless", "-n", "shop")
	s.run("", false, "create", "both", "-n", "shop", "--application", "portal", "--expires-in", "1d", "--expires-at", "2027-01-01T00:00:00Z")
	s.run("", false, "create", "-n", "shop", "--application", "portal")
	f := newWorld(t, func(w *world) { w.forbidSecrets = true })
	args := []string{"create", "theirs", "-n", "shop", "--application", "portal", "--timeout", "50ms"}
	s.b.WriteString(f.run("", false, args...).transcript("", args...))
	noKeyMaterial(t, s.b.String())
	s.golden("create_refused")
}

func TestRotate(t *testing.T) {
	s := &script{t: t, w: newWorld(t, nil)}
	s.run("", false, "rotate", "web", "-n", "shop", "--grace", "2h", "--wait")
	s.run("", false, "rotate", "web", "-n", "shop", "-o", "json")
	s.run("", false, "rotate", "ci", "-n", "shop")
	s.run("", false, "rotate", "leaked", "-n", "shop")
	s.run("", false, "rotate", "off", "-n", "lab", "--wait")
	s.run("", false, "rotate", "web", "-n", "shop", "--grace", "31d")
	s.run("", false, "rotate", "web", "-n", "shop", "--grace", "soon")
	s.run("", false, "rotate", "-n", "shop")
	s.run("", false, "rotate", "web", "ci", "-n", "shop")
	s.golden("rotate")

	// The rotation request and the grace period landed in one patch.
	var k keyward.AccessKey
	if err := s.w.c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "web"}, &k); err != nil {
		t.Fatal(err)
	}
	if k.Spec.Rotation == nil || k.Spec.Rotation.GracePeriod == nil || *k.Spec.Rotation.GracePeriod != "2h0m0s" {
		t.Errorf("grace period not set: %+v", k.Spec.Rotation)
	}
}

func TestRotationRequestsAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		v, err := rotationRequest(now, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^2026-11-25T12:00:00Z-[0-9a-f]{12}$`).MatchString(v) {
			t.Fatalf("request %q", v)
		}
		if seen[v] {
			t.Fatalf("request %q repeated within one second", v)
		}
		seen[v] = true
	}
}

func TestLifecycleCommands(t *testing.T) {
	s := &script{t: t, w: newWorld(t, nil)}
	s.run("", false, "deactivate", "web", "-n", "shop")
	s.run("", false, "activate", "web", "-n", "shop")
	s.run("", false, "activate", "leaked", "-n", "shop")
	s.run("", false, "extend", "web", "-n", "shop", "--by", "30d")
	s.run("", false, "extend", "web", "-n", "shop", "--until", "2027-01-31T00:00:00Z")
	s.run("", false, "extend", "expired", "-n", "shop", "--by", "1d12h")
	s.run("", false, "extend", "ci", "-n", "shop", "--by", "30d")
	s.run("", false, "extend", "web", "-n", "shop")
	s.run("", false, "extend", "web", "-n", "shop", "--by", "1d", "--until", "2027-01-31T00:00:00Z")
	s.run("", false, "extend", "web", "-n", "shop", "--until", "31.1.2027")
	s.run("", false, "extend", "web", "-n", "shop", "--until", "9999-01-01T00:00:00Z")
	s.run("", false, "deactivate", "paused", "-n", "shop", "--wait=false")
	s.golden("lifecycle")
}

func TestRevoke(t *testing.T) {
	s := &script{t: t, w: newWorld(t, nil)}
	s.run("", false, "revoke", "web", "-n", "shop")
	s.run("no\n", true, "revoke", "web", "-n", "shop")
	s.run("yes\n", true, "revoke", "web", "-n", "shop")
	s.run("", false, "revoke", "web", "-n", "shop", "--yes")
	s.run("", false, "revoke", "paused", "-n", "shop", "-y")
	s.golden("revoke")

	d := &script{t: t, w: newWorld(t, func(w *world) { w.forbidRevoke = true })}
	d.run("", false, "revoke", "web", "-n", "shop", "--yes", "--as", "dana")
	d.golden("revoke_refused")
}

func TestUsageErrors(t *testing.T) {
	s := &script{t: t, w: newWorld(t, nil)}
	s.run("", false, "status", "web", "ci", "-n", "shop")
	s.run("", false, "status", "web", "-A")
	s.run("", false, "status", "-o", "wide")
	s.run("", false, "expiring", "soon")
	s.run("", false, "expiring", "--within", "0s")
	s.run("", false, "expiring", "--within", "-1h")
	s.run("", false, "frobnicate")
	s.golden("usage_errors")
}

func TestCompletion(t *testing.T) {
	w := newWorld(t, nil)
	r := w.run("", false, "__complete", "rotate", "-n", "shop", "")
	if got := strings.Fields(r.stdout); strings.Join(got, " ") != "ci expired leaked paused web :4" {
		t.Errorf("completion of rotate: %q", r.stdout)
	}
	r = w.run("", false, "__complete", "reveal", "-n", "shop", "pa")
	if got := strings.Fields(r.stdout); strings.Join(got, " ") != "paused :4" {
		t.Errorf("completion of reveal pa: %q", r.stdout)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour, "720h": 720 * time.Hour, "90m": 90 * time.Minute,
		"0d": 0, "1d30m": 24*time.Hour + 30*time.Minute, " 2d ": 48 * time.Hour, "1w": 7 * 24 * time.Hour,
		"60s": time.Minute, "500ms": 500 * time.Millisecond, "1h0m0s": time.Hour, "0": 0,
	} {
		got, err := parseDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "30", "-1d", "1d-2h", "1.5d", "thirty days", "1d1d", "2h1d", "999999999d", "1x"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
		}
	}
}

// Every duration flag takes the same syntax, --timeout included.
func TestEveryDurationFlagTakesDays(t *testing.T) {
	root := NewRootCommand(NewOptions(genericiooptions.NewTestIOStreamsDiscard()))
	var flags []string
	for _, cmd := range root.Commands() {
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Value.Type() != "duration" {
				return
			}
			flags = append(flags, cmd.Name()+" --"+f.Name)
			if _, ok := f.Value.(*durationValue); !ok {
				t.Errorf("%s --%s does not use the plugin's duration syntax", cmd.Name(), f.Name)
			} else if err := f.Value.Set("1d"); err != nil {
				t.Errorf("%s --%s 1d: %v", cmd.Name(), f.Name, err)
			}
		})
	}
	for _, want := range []string{"revoke --timeout", "create --timeout", "rotate --grace", "extend --by", "expiring --within"} {
		if !slices.Contains(flags, want) {
			t.Errorf("no duration flag %s among %v", want, flags)
		}
	}
}

// Several keys at once, by name or -l, with one confirmation for revoke.
func TestBulkLifecycle(t *testing.T) {
	s := &script{t: t, w: newWorld(t, nil)}
	s.run("", false, "revoke", "web", "paused", "-n", "shop")
	s.run("no\n", true, "revoke", "web", "paused", "web", "-n", "shop")
	s.run("", false, "revoke", "web", "nope", "-n", "shop", "--yes")
	s.run("", false, "revoke", "web", "-l", "team=payments", "-n", "shop")
	s.run("", false, "revoke", "-n", "shop")
	s.run("", false, "revoke", "-l", "team=nobody", "-n", "shop", "--yes")
	s.run("", false, "deactivate", "-l", "team=payments", "-n", "shop")
	s.run("", false, "activate", "web", "paused", "leaked", "-n", "shop")
	s.run("yes\n", true, "revoke", "-l", "team=payments", "-n", "shop")
	s.run("", false, "revoke", "web", "paused", "leaked", "-n", "shop", "--yes")
	s.golden("bulk")

	d := &script{t: t, w: newWorld(t, func(w *world) { w.forbidRevoke = true })}
	d.run("", false, "revoke", "web", "paused", "-n", "shop", "--yes", "--as", "dana")
	d.golden("bulk_refused")

	var k keyward.AccessKey
	if err := d.w.c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "paused"}, &k); err != nil || k.Spec.Revoked {
		t.Errorf("a refused bulk revoke changed paused: revoked %v, %v", k.Spec.Revoked, err)
	}
}

func TestVersion(t *testing.T) {
	defer func(v, r string) { version.Version, version.Revision = v, r }(version.Version, version.Revision)
	version.Version, version.Revision = "v0.3.0", "abc123"
	w := newWorld(t, nil)
	r := w.run("", false, "version")
	want := fmt.Sprintf("Client Version: v0.3.0 (revision abc123, %s, %s/%s)\nManager Version: v0.3.0 (image ghcr.io/keyward/manager:v0.3.0, Deployment keyward-system/keyward-controller-manager)\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if r.code != 0 || r.stdout != want {
		t.Errorf("version: exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, want)
	}
	r = w.run("", false, "version", "--client", "-o", "json")
	var got VersionResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Client.Version != "v0.3.0" || got.Manager != nil {
		t.Errorf("version --client -o json: %q, %v", r.stdout, err)
	}
	if err := w.c.DeleteAllOf(context.Background(), &appsv1.Deployment{}, client.InNamespace("keyward-system")); err != nil {
		t.Fatal(err)
	}
	r = w.run("", false, "version")
	if !strings.Contains(r.stdout, "Manager Version: unknown (no Deployment labelled app.kubernetes.io/name=keyward runs a manager container") || r.code != 0 {
		t.Errorf("version without a manager: exit %d, %q", r.code, r.stdout)
	}
	for image, want := range map[string]string{
		"keyward/manager:dev": "dev", "localhost:5000/keyward/manager": "latest",
		"ghcr.io/keyward/manager@sha256:abc": "sha256:abc", "localhost:5000/keyward/manager:v1.2.3": "v1.2.3",
	} {
		if got := imageVersion(image); got != want {
			t.Errorf("imageVersion(%q) = %q, want %q", image, got, want)
		}
	}
}

// A cluster without Keyward's CRDs: the real client against an API server
// whose discovery knows no keyward.dev says so in one sentence.
func TestNotInstalled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api":
			_, _ = w.Write([]byte(`{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}`))
		case "/apis":
			_, _ = w.Write([]byte(`{"kind":"APIGroupList","apiVersion":"v1","groups":[]}`))
		case "/api/v1":
			_, _ = w.Write([]byte(`{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"secrets","namespaced":true,"kind":"Secret","verbs":["get","list"]}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, args := range [][]string{{"status", "-n", "shop"}, {"status", "web", "-n", "shop"}, {"revoke", "web", "-n", "shop", "--yes"}, {"expiring", "-A"}} {
		var out, errOut bytes.Buffer
		o := NewOptions(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		code := Run(o, append(args, "--server", srv.URL))
		want := "error: this cluster has no Keyward: the API server does not serve accesskeys.keyward.dev/v1alpha1 (Keyward is not installed, or --context names another cluster; to install it, see docs/operations.md#install)\n"
		if code != 1 || errOut.String() != want {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut.String())
		}
	}
}

func TestExplainAdmissionRefusal(t *testing.T) {
	w := newWorld(t, func(w *world) { w.forbidRevoke = true })
	r := w.run("", false, "revoke", "web", "-n", "shop", "--yes")
	want := "error: revoking an AccessKey (spec.revoked: true) needs the revoke verb on accesskeys, granted by the ClusterRole keyward-tenant-admin; user dana does not have it in namespace shop (refused by the admission policy keyward-accesskey-rights)\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

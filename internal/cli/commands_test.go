package cli

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
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
		"0d": 0, "1d30m": 24*time.Hour + 30*time.Minute, " 2d ": 48 * time.Hour,
	} {
		got, err := parseDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "30", "-1d", "1d-2h", "1.5d", "thirty days", "1w", "1d1d", "999999999d"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
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

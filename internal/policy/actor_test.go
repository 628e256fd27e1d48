package policy

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// The Events a user's change causes name that user, as the admission
// policy stamped them; the others name no one.
func TestEventNoteNamesTheActor(t *testing.T) {
	stamped := func(k *keyward.AccessKey) {
		k.Annotations = map[string]string{
			keyward.RevokedByAnnotation:           "tess",
			keyward.StateChangedByAnnotation:      "dana@example.com",
			keyward.RotationRequestedByAnnotation: "system:serviceaccount:ci:deployer",
			keyward.ExpiryChangedByAnnotation:     "erin",
		}
	}
	rotate := func(k *keyward.AccessKey) {
		k.Annotations[keyward.RotateAnnotation] = "2"
		k.Status.Rotation = &keyward.RotationStatus{LastRequest: "1"}
	}
	cases := []struct {
		name   string
		k      keyward.AccessKey
		reason string
		actor  string
	}{
		{"revoked", key("k", "a", -time.Hour, issued(keyward.PhaseActive), stamped, func(k *keyward.AccessKey) { k.Spec.Revoked = true }), keyward.EventRevoked, "tess"},
		{"deactivated", key("k", "a", -time.Hour, issued(keyward.PhaseActive), stamped, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive }), keyward.EventDeactivated, "dana@example.com"},
		{"reactivated", key("k", "a", -time.Hour, issued(keyward.PhaseInactive), stamped), keyward.EventReactivated, "dana@example.com"},
		{"rotated", key("k", "a", -time.Hour, issued(keyward.PhaseActive), stamped, rotate), keyward.EventRotated, "system:serviceaccount:ci:deployer"},
		{"issued: no actor", key("k", "a", -time.Hour, stamped), keyward.EventIssued, ""},
		{"no stamp (policy missing)", key("k", "a", -time.Hour, issued(keyward.PhaseActive), func(k *keyward.AccessKey) { k.Spec.Revoked = true }), keyward.EventRevoked, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := plan(c.k)
			if p.Event == nil || p.Event.Reason != c.reason || p.Event.Actor != c.actor {
				t.Fatalf("event %+v, want %s by %q", p.Event, c.reason, c.actor)
			}
			note := p.EventNote()
			if c.actor != "" && !strings.HasSuffix(note, "; by "+c.actor) {
				t.Fatalf("note %q does not name %s", note, c.actor)
			}
			if c.actor == "" && strings.Contains(note, "; by ") {
				t.Fatalf("note %q names someone", note)
			}
		})
	}
}

func TestUserNameCannotForgeALineOrStretchAMessage(t *testing.T) {
	for in, want := range map[string]string{
		"dana":                       "dana",
		"system:serviceaccount:ci:d": "system:serviceaccount:ci:d",
		"dana\nRevoked by tess":      `"dana\nRevoked by tess"`,
		"two words":                  `"two words"`,
		`quo"te`:                     `"quo\"te"`,
		"":                           `""`,
	} {
		if got := UserName(in); got != want {
			t.Errorf("UserName(%q) = %s, want %s", in, got, want)
		}
	}
	long := UserName(strings.Repeat("é", 1000))
	if len(long) > MaxUserName+3 || !utf8.ValidString(long) || !strings.HasSuffix(long, "...") {
		t.Fatalf("long name rendered as %d bytes, valid %v", len(long), utf8.ValidString(long))
	}
}

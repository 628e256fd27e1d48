package version

import (
	"strings"
	"testing"
)

func TestGetReportsStampedValues(t *testing.T) {
	defer func(v, r string) { Version, Revision = v, r }(Version, Revision)
	Version, Revision = "v1.2.3", "abc123"
	got := Get()
	if got.Version != "v1.2.3" || got.Revision != "abc123" {
		t.Errorf("Get() = %+v, want the stamped version and revision", got)
	}
	if s := got.String(); !strings.HasPrefix(s, "v1.2.3 (revision abc123, go") {
		t.Errorf("String() = %q", s)
	}
}

func TestUnstampedRevisionIsNeverEmpty(t *testing.T) {
	defer func(r string) { Revision = r }(Revision)
	Revision = ""
	if got := Get(); got.Revision == "" || got.Version == "" {
		t.Errorf("Get() = %+v: an unstamped build must still name a version and revision", got)
	}
}

func TestLDFlagsNameThisPackage(t *testing.T) {
	got := LDFlags("v0.1.0", "deadbeef")
	for _, want := range []string{"-X keyward.dev/keyward/internal/version.Version=v0.1.0", "-X keyward.dev/keyward/internal/version.Revision=deadbeef"} {
		if !strings.Contains(got, want) {
			t.Errorf("LDFlags = %q, lacks %q", got, want)
		}
	}
}

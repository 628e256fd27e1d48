package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Every default is defined once in Go; the CRD markers cannot name a Go
// constant, so this test holds the generated CRDs' defaults equal to them.
func TestCRDDefaultsEqualTheGoConstants(t *testing.T) {
	cases := []struct {
		crd, field string
		want       any
	}{
		{"keyward.dev_applications.yaml", "maxAccessKeys", float64(keyward.DefaultMaxAccessKeys)},
		{"keyward.dev_applications.yaml", "group", keyward.DefaultGroup},
		{"keyward.dev_tenantsettings.yaml", "maxKeysPerOwner", float64(keyward.DefaultMaxKeysPerOwner)},
		{"keyward.dev_tenantsettings.yaml", "maxKeys", float64(keyward.DefaultMaxKeys)},
		{"keyward.dev_tenantsettings.yaml", "expiryWarning", keyward.DefaultExpiryWarning},
		{"keyward.dev_tenantsettings.yaml", "rotationGracePeriod", keyward.DefaultRotationGracePeriod},
	}
	for _, c := range cases {
		got := crdSpecDefault(t, c.crd, c.field)
		if got != c.want {
			t.Errorf("%s: spec.%s defaults to %v in the CRD, %v in Go", c.crd, c.field, got, c.want)
		}
	}
	// And the Go side applies them.
	tenant := TenantFrom(nil, false)
	if tenant.MaxKeysPerOwner != keyward.DefaultMaxKeysPerOwner || tenant.MaxKeys != keyward.DefaultMaxKeys ||
		tenant.ExpiryWarning != mustDuration(keyward.DefaultExpiryWarning) || tenant.ExpiryWarning != 720*time.Hour {
		t.Fatalf("TenantFrom(nil) = %+v", tenant)
	}
	if tenant.RotationGracePeriod != 5*time.Minute {
		t.Fatalf("TenantFrom(nil).RotationGracePeriod = %s", tenant.RotationGracePeriod)
	}
	if maxAccessKeys(app("a", 0)) != keyward.DefaultMaxAccessKeys {
		t.Fatal("an Application without maxAccessKeys")
	}
}

func crdSpecDefault(t *testing.T, file, field string) any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]struct {
							Properties map[string]json.RawMessage `json:"properties"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	prop := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties[field]
	var p struct {
		Default any `json:"default"`
	}
	if err := json.Unmarshal(prop, &p); err != nil {
		t.Fatalf("%s: spec.%s: %v", file, field, err)
	}
	return p.Default
}

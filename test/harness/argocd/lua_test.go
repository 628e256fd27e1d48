package argocd

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"keyward.dev/keyward/internal/devenv/controlplane"
)

// The tests follow Argo CD's layout for resource customizations
// (resource_customizations/<group>/<Kind>/health_test.yaml listing inputs
// under testdata/ with the expected status and message;
// actions/action_test.yaml with discovery and action tests), so that the
// scripts can be upstreamed to Argo CD as they are.

type healthTests struct {
	Tests []struct {
		HealthStatus HealthStatus `json:"healthStatus"`
		InputPath    string       `json:"inputPath"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string            `json:"inputPath"`
		Result    []ActionDiscovery `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action             string `json:"action"`
		InputPath          string `json:"inputPath"`
		ExpectedOutputPath string `json:"expectedOutputPath"`
	} `json:"actionTests"`
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func root(t *testing.T) string {
	t.Helper()
	r, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestHealth(t *testing.T) {
	for _, kind := range []string{"AccessKey", "Application", "TenantSettings"} {
		dir := Dir(root(t), kind)
		var tests healthTests
		readYAML(t, filepath.Join(dir, "health_test.yaml"), &tests)
		if len(tests.Tests) == 0 {
			t.Fatalf("%s: no health tests", kind)
		}
		for _, tc := range tests.Tests {
			t.Run(kind+"/"+tc.InputPath, func(t *testing.T) {
				var obj map[string]any
				readYAML(t, filepath.Join(dir, tc.InputPath), &obj)
				got, err := Health(root(t), kind, obj)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.HealthStatus {
					t.Errorf("health %+v, want %+v", got, tc.HealthStatus)
				}
			})
		}
	}
}

func TestActions(t *testing.T) {
	dir := filepath.Join(Dir(root(t), "AccessKey"), "actions")
	var tests actionTests
	readYAML(t, filepath.Join(dir, "action_test.yaml"), &tests)
	for _, tc := range tests.DiscoveryTests {
		t.Run("discovery/"+tc.InputPath, func(t *testing.T) {
			var obj map[string]any
			readYAML(t, filepath.Join(dir, tc.InputPath), &obj)
			got, err := Discover(root(t), "AccessKey", obj)
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(got, func(a, b ActionDiscovery) int { return cmpString(a.Name, b.Name) })
			if !slices.Equal(got, tc.Result) {
				t.Errorf("actions %+v, want %+v", got, tc.Result)
			}
		})
	}
	for _, tc := range tests.ActionTests {
		t.Run(tc.Action+"/"+tc.InputPath, func(t *testing.T) {
			var obj, want map[string]any
			readYAML(t, filepath.Join(dir, tc.InputPath), &obj)
			readYAML(t, filepath.Join(dir, tc.ExpectedOutputPath), &want)
			before := time.Now().UTC().Truncate(time.Second)
			got, err := Action(root(t), "AccessKey", tc.Action, obj)
			if err != nil {
				t.Fatal(err)
			}
			after := time.Now().UTC()
			// The annotation is the time the action ran.
			ann := got["metadata"].(map[string]any)["annotations"].(map[string]any)
			at, err := time.Parse(time.RFC3339, ann["keyward.dev/rotate"].(string))
			if err != nil || at.Before(before) || at.After(after) {
				t.Errorf("keyward.dev/rotate %q is not the time the action ran (%s..%s)", ann["keyward.dev/rotate"], before, after)
			}
			ann["keyward.dev/rotate"] = want["metadata"].(map[string]any)["annotations"].(map[string]any)["keyward.dev/rotate"]
			g, _ := yaml.Marshal(got)
			w, _ := yaml.Marshal(want)
			if string(g) != string(w) {
				t.Errorf("action output:\n%s\nwant:\n%s", g, w)
			}
		})
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

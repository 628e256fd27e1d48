package serve

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/internal/verify/verifytest"
)

// newWorld is verifytest's World (keys in every state) and a verifier over it.
func newWorld(t *testing.T) (*verifytest.World, *verify.Verifier) {
	t.Helper()
	w := verifytest.NewWorld(t, verify.KeyIDs)
	return w, &verify.Verifier{Store: w.Store, Now: func() time.Time { return verifytest.T0 }}
}

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

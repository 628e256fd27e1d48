//go:build image

// Package image tests the container image users deploy, as `make image-test`
// builds it (hack/image/test.sh): its configuration and contents, and the
// image running under podman as config/manager's Deployment runs it, against
// a real control plane on loopback, driven with the real kubectl. It needs
// the build tag "image" and the environment hack/image/test.sh sets, so
// `go test ./...` and `make test` never run it.
package image

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keyward.dev/keyward/test/harness/testenv"
)

var (
	// imageRef is the image under test, built by hack/image/build.sh.
	imageRef = os.Getenv("KEYWARD_IMAGE")
	// runID labels every container this run creates, so hack/image/test.sh
	// removes them even when the test binary dies.
	runID = os.Getenv("KEYWARD_IMAGE_RUN")
	// defaultImage is the Makefile's default IMG, which config/manager must use.
	defaultImage = os.Getenv("KEYWARD_IMAGE_DEFAULT")
	// podmanCmd is podman with its global flags (PODMAN_FLAGS).
	podmanCmd = strings.Fields(os.Getenv("KEYWARD_PODMAN"))
	// wantVersion and wantRevision are what hack/image/build.sh stamped.
	wantVersion  = os.Getenv("VERSION")
	wantRevision = os.Getenv("REVISION")
)

// maxImageSize is the bound issue 13 sets for the image.
const maxImageSize = 60 << 20

func TestMain(m *testing.M) {
	var missing []string
	for name, v := range map[string]string{"KEYWARD_IMAGE": imageRef, "KEYWARD_IMAGE_RUN": runID,
		"KEYWARD_IMAGE_DEFAULT": defaultImage, "KEYWARD_PODMAN": strings.Join(podmanCmd, " "),
		"VERSION": wantVersion, "REVISION": wantRevision} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "test/image: %s not set; run `make image-test`\n", strings.Join(missing, ", "))
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// podman runs podman with args and returns its standard output, standard
// error and error. It never fails the test itself.
func podman(args ...string) (string, string, error) {
	cmd := exec.Command(podmanCmd[0], append(podmanCmd[1:], args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// mustPodman is podman that fails the test when podman fails.
func mustPodman(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := podman(args...)
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// errGaveUp, wrapped in a condition's error, ends eventually at once: there
// is no point waiting (the container has exited).
var errGaveUp = errors.New("gave up")

// eventually polls cond every interval until it returns true, timeout passes
// or cond returns an error wrapping errGaveUp; it returns whether cond came
// true and the last error cond gave.
func eventually(timeout, interval time.Duration, cond func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if ok {
			return true, nil
		}
		if errors.Is(err, errGaveUp) || time.Now().After(deadline) {
			return false, err
		}
		<-tick.C
	}
}

// freeAddr is a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// repoFile is a path in the repository.
func repoFile(parts ...string) string {
	return filepath.Join(append([]string{testenv.RepoRoot()}, parts...)...)
}

// measured prints one of the figures the image test reports; hack/image/test.sh
// shows these lines on the terminal.
func measured(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("MEASURED "+format, args...)
}

package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/controllers"
)

// ManagerOptions are the manager's options (internal/manager) that matter inside a test
// process — the scheme, the cache (Keyward's Secrets selected by label on
// the API server) and the field owner — with metrics and health probes off.
// Callers change what their suite needs.
func (e *Env) ManagerOptions(log logr.Logger) ctrl.Options {
	return ctrl.Options{
		Scheme:                 e.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 log,
		Cache:                  controllers.CacheOptions(),
		Client:                 client.Options{FieldOwner: controllers.FieldOwner},
	}
}

// LogBuffer keeps everything a logger wrote, so a suite can search the
// manager's log for key material.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// CaptureLogs returns a development logger at the highest verbosity (the
// level at which a leak would most likely show) that writes to the returned
// buffer and to also (a suite's GinkgoWriter).
func CaptureLogs(also io.Writer) (logr.Logger, *LogBuffer) {
	buf := &LogBuffer{}
	return zap.New(zap.WriteTo(io.MultiWriter(buf, also)), zap.UseDevMode(true), zap.Level(zapcore.Level(-1))), buf
}

// FindKeyMaterial looks for each of material (plaintext keys and their
// secret parts) in every AccessKey (metadata, spec and status), every Event
// and logs. The
// error names the place, never the material.
func FindKeyMaterial(ctx context.Context, c client.Reader, material map[string]bool, logs string) error {
	var keys keyward.AccessKeyList
	if err := c.List(ctx, &keys); err != nil {
		return err
	}
	keysJSON, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	var events corev1.EventList
	if err := c.List(ctx, &events); err != nil {
		return err
	}
	eventsJSON, err := json.Marshal(events)
	if err != nil {
		return err
	}
	places := map[string]string{
		"an AccessKey":      string(keysJSON),
		"an Event":          string(eventsJSON),
		"the manager's log": logs,
	}
	for m := range material {
		for place, text := range places {
			if strings.Contains(text, m) {
				return fmt.Errorf("key material found in %s", place)
			}
		}
	}
	return nil
}

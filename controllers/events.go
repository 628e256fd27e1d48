package controllers

import (
	"context"
	"os"
	"sync"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record/util"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// EventSource is the reporting controller of every Event Keyward records.
const EventSource = "keyward"

// reportingInstance is EventSource and the host name, as client-go's
// recorder names the instance.
var reportingInstance = sync.OnceValue(func() string {
	host, _ := os.Hostname()
	return EventSource + "-" + host
})

// recordNow writes an Event about obj through the API server at once,
// where the recorder would queue it: for an Event that must exist before
// the status recording its transition is written (policy.Event.BeforeStatus).
// The note must be fit for an Event (policy.Plan.EventNote).
func recordNow(ctx context.Context, c client.Client, obj client.Object, eventType, reason, note string) error {
	regarding, err := reference.GetReference(c.Scheme(), obj)
	if err != nil {
		return err
	}
	now := time.Now()
	return c.Create(ctx, &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: util.GenerateEventName(regarding.Name, now.UnixNano()), Namespace: obj.GetNamespace()},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: EventSource,
		ReportingInstance:   reportingInstance(),
		Action:              reason,
		Reason:              reason,
		Regarding:           *regarding,
		Note:                note,
		Type:                eventType,
	})
}

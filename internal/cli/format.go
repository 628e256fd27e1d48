package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// none is what tables show for a value that is not there, as kubectl does.
const none = "<none>"

// resultOutputFlag adds -o/--output to the commands that print a result
// rather than AccessKeys (rotate, whois, version): json or yaml.
func resultOutputFlag(cmd *cobra.Command, to *string) {
	cmd.Flags().StringVarP(to, "output", "o", "", "output format: json or yaml (default: text)")
}

func checkResultOutput(format string) error {
	switch format {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("unknown output format %q: use -o json or -o yaml, or leave -o out for text", format)
}

// printStructured writes v as indented JSON or as YAML.
func printStructured(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// KeyView is what the tables and the detail of status and expiring show of
// one AccessKey; -o json|yaml|... print the AccessKey itself. It never holds
// key material.
type KeyView struct {
	Namespace   string
	Name        string
	Phase       string
	Reason      string
	Message     string
	Application string
	Owner       string
	Description string
	KeyID       string
	ExpiresAt   string
	LastUsedAt  string
	IssuedAt    string
	PreviousKey *PreviousView
	SecretName  string
	// Who acted on the key, as the admission policy keyward-stamp-actor
	// recorded it (users who cannot forge it).
	RevokedBy           string
	StateChangedBy      string
	ExpiryChangedBy     string
	RotationRequestedBy string
	// Events are the key's recent Events (status of one key only).
	Events []EventView
	// EventsError says why the Events could not be read.
	EventsError string

	expiresAt  *time.Time
	lastUsedAt *time.Time
	issuedAt   *time.Time
	key        *keyward.AccessKey
}

// PreviousView is the rotated-out key that still verifies.
type PreviousView struct {
	KeyID      string
	ValidUntil string

	validUntil time.Time
}

// EventView is one Event of a key.
type EventView struct {
	Type    string
	Reason  string
	Time    string
	Message string

	at time.Time
}

func ready(k *keyward.AccessKey) (reason, message string) {
	if c := meta.FindStatusCondition(k.Status.Conditions, keyward.ConditionReady); c != nil {
		return c.Reason, c.Message
	}
	return "", ""
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func viewOf(k *keyward.AccessKey) KeyView {
	v := KeyView{
		Namespace:   k.Namespace,
		Name:        k.Name,
		Phase:       string(k.Status.Phase),
		Application: k.Spec.Application,
		Owner:       k.Spec.Owner,
		Description: k.Spec.Description,
		KeyID:       k.Status.KeyID,
		SecretName:  k.Status.SecretName,

		RevokedBy:           k.Annotations[keyward.RevokedByAnnotation],
		StateChangedBy:      k.Annotations[keyward.StateChangedByAnnotation],
		ExpiryChangedBy:     k.Annotations[keyward.ExpiryChangedByAnnotation],
		RotationRequestedBy: k.Annotations[keyward.RotationRequestedByAnnotation],

		key: k,
	}
	v.Reason, v.Message = ready(k)
	if t := k.Status.ExpiresAt; t != nil {
		at := t.Time
		v.expiresAt, v.ExpiresAt = &at, rfc3339(at)
	}
	if t := k.Status.LastUsedAt; t != nil {
		at := t.Time
		v.lastUsedAt, v.LastUsedAt = &at, rfc3339(at)
	}
	if t := k.Status.IssuedAt; t != nil {
		at := t.Time
		v.issuedAt, v.IssuedAt = &at, rfc3339(at)
	}
	if pk := k.Status.PreviousKey; pk != nil {
		v.PreviousKey = &PreviousView{KeyID: pk.KeyID, ValidUntil: rfc3339(pk.ValidUntil.Time), validUntil: pk.ValidUntil.Time}
	}
	return v
}

func eventViewOf(e *corev1.Event) EventView {
	at := eventTime(e)
	v := EventView{Type: e.Type, Reason: e.Reason, Message: e.Message, at: at}
	if !at.IsZero() {
		v.Time = rfc3339(at)
	}
	return v
}

// eventTime is when an Event last happened, whichever API wrote it.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// short is the printer column's 8-character key ID.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return or(id, none)
}

// until says how far t is from now: "in 29d", or "3d ago".
func until(t, now time.Time) string {
	d := t.Sub(now)
	if d >= 0 {
		return "in " + duration.HumanDuration(d)
	}
	return duration.HumanDuration(-d) + " ago"
}

func expiresIn(v KeyView, now time.Time) string {
	if v.Phase == string(keyward.PhaseRevoked) {
		return none
	}
	if v.expiresAt == nil {
		return "never"
	}
	d := v.expiresAt.Sub(now)
	if d <= 0 {
		return "expired " + duration.HumanDuration(-d) + " ago"
	}
	return duration.HumanDuration(d)
}

func lastUsed(v KeyView, now time.Time) string {
	if v.lastUsedAt == nil {
		return "never"
	}
	return duration.HumanDuration(now.Sub(*v.lastUsedAt)) + " ago"
}

func previousUntil(v KeyView, now time.Time) string {
	if v.PreviousKey == nil {
		return none
	}
	return short(v.PreviousKey.KeyID) + " " + until(v.PreviousKey.validUntil, now)
}

// statusColumns are the columns of status; -o wide adds when the key was
// issued, its absolute expiry and its description.
func statusColumns(now time.Time) []column {
	return []column{
		{name: "Name", cell: func(v KeyView) string { return v.Name }},
		{name: "Phase", cell: func(v KeyView) string { return or(v.Phase, none) }},
		{name: "Reason", cell: func(v KeyView) string { return or(v.Reason, none) }},
		{name: "Application", cell: func(v KeyView) string { return v.Application }},
		{name: "Owner", cell: func(v KeyView) string { return or(v.Owner, none) }},
		{name: "Key ID", cell: func(v KeyView) string { return short(v.KeyID) }},
		{name: "Expires In", cell: func(v KeyView) string { return expiresIn(v, now) }},
		{name: "Last Used", cell: func(v KeyView) string { return lastUsed(v, now) }},
		{name: "Previous Key", cell: func(v KeyView) string { return previousUntil(v, now) }},
		{name: "Secret", cell: func(v KeyView) string { return or(v.SecretName, none) }},
		{name: "Issued At", wide: true, cell: func(v KeyView) string { return or(v.IssuedAt, none) }},
		{name: "Expires At", wide: true, cell: func(v KeyView) string { return or(v.ExpiresAt, "never") }},
		{name: "Description", wide: true, cell: func(v KeyView) string { return or(v.Description, none) }},
		{name: "Message", cell: func(v KeyView) string { return or(v.Message, none) }},
	}
}

// printKeyDetail writes the status of one key, kubectl-describe style.
func printKeyDetail(w io.Writer, v KeyView, now time.Time) error {
	tw := printers.GetNewTabWriter(w)
	line := func(k, val string) { _, _ = fmt.Fprintf(tw, "%s:\t%s\n", k, val) }
	line("Name", v.Name)
	line("Namespace", v.Namespace)
	line("Phase", or(v.Phase, "<not yet reconciled>"))
	line("Reason", or(v.Reason, none))
	line("Message", or(v.Message, none))
	line("Application", v.Application)
	line("Owner", or(v.Owner, none))
	if v.KeyID != "" {
		line("Key ID", short(v.KeyID)+" ("+v.KeyID+")")
	} else {
		line("Key ID", "<not issued>")
	}
	if v.expiresAt != nil {
		line("Expires", v.ExpiresAt+" ("+until(*v.expiresAt, now)+")")
	} else {
		line("Expires", "never")
	}
	if v.lastUsedAt != nil {
		line("Last used", v.LastUsedAt+" ("+until(*v.lastUsedAt, now)+")")
	} else {
		line("Last used", "never")
	}
	if pk := v.PreviousKey; pk != nil {
		line("Previous key", short(pk.KeyID)+", verifies until "+pk.ValidUntil+" ("+until(pk.validUntil, now)+")")
	} else {
		line("Previous key", none)
	}
	line("Secret", or(v.SecretName, none))
	for _, by := range []struct{ what, who string }{
		{"Revoked by", v.RevokedBy}, {"State changed by", v.StateChangedBy},
		{"Expiry changed by", v.ExpiryChangedBy}, {"Rotation requested by", v.RotationRequestedBy},
	} {
		if by.who != "" {
			line(by.what, policy.UserName(by.who))
		}
	}
	switch {
	case v.EventsError != "":
		line("Events", "<"+v.EventsError+">")
	case len(v.Events) == 0:
		line("Events", none)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Events) > 0 {
		_, _ = fmt.Fprintln(w, "Events:")
		tw = printers.GetNewTabWriter(w)
		_, _ = fmt.Fprintln(tw, "  TYPE\tREASON\tAGE\tMESSAGE")
		for _, e := range v.Events {
			age := "<unknown>"
			if !e.at.IsZero() {
				age = duration.HumanDuration(now.Sub(e.at))
			}
			_, _ = fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Type, e.Reason, age, oneLine(e.Message))
		}
		return tw.Flush()
	}
	return nil
}

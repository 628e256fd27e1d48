package policy

import (
	"fmt"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Event is the Kubernetes Event a plan records once its status is written.
type Event struct {
	Type   string // Normal or Warning
	Reason string // an Event* constant
	// BeforeStatus asks for the Event to be written, at once, before the
	// status that records the transition: nothing else in the API records
	// it, so a manager stopped between the status write and a queued Event
	// must not lose it. A retry after such a stop re-plans the same
	// transition and writes the Event again.
	BeforeStatus bool
	// Actor is the user who caused the transition, as the admission policy
	// stamped it on the key ("" when unknown); the note names them.
	Actor string
}

// EventNote is the note of the plan's Event: the Ready message and the key
// ID, never key material.
func (p *Plan) EventNote() string {
	msg := ""
	if c := p.Ready(); c != nil {
		msg = c.Message
	}
	if p.Status.KeyID != "" {
		msg = fmt.Sprintf("%s (key ID %s)", msg, p.Status.KeyID)
	}
	if p.Event != nil && p.Event.Actor != "" {
		msg = fmt.Sprintf("%s; by %s", msg, UserName(p.Event.Actor))
	}
	return BoundMessage(msg)
}

// phase to another with the given material action; "" means none.
func transitionEvent(from keyward.KeyPhase, d decision) string {
	switch d.material {
	case MaterialIssue:
		return keyward.EventIssued
	case MaterialImport:
		return keyward.EventImported
	case MaterialRotate:
		return keyward.EventRotated
	case MaterialReissue:
		return keyward.EventSecretRecreated
	}
	if from == d.phase {
		return ""
	}
	switch d.phase {
	case keyward.PhaseActive:
		if from != "" {
			return keyward.EventReactivated
		}
	case keyward.PhaseInactive:
		return keyward.EventDeactivated
	case keyward.PhaseExpired:
		return keyward.EventExpired
	case keyward.PhaseRevoked:
		return keyward.EventRevoked
	case keyward.PhaseRejected:
		switch d.reason {
		case keyward.ReasonApplicationLimitExceeded, keyward.ReasonOwnerLimitExceeded, keyward.ReasonTenantLimitExceeded:
			return keyward.EventLimitExceeded
		}
		return d.reason
	}
	return ""
}

package controllers

import (
	"fmt"

	"keyward.dev/keyward/internal/policy"
)

// MinMaxRequeue is the smallest --max-requeue: below it every key would be
// looked at again many times a second.
const MinMaxRequeue = 10 * policy.MinRequeue

// Validate refuses settings the manager cannot run with.
func (o Options) Validate() error {
	if o.MaxRequeue < MinMaxRequeue {
		return fmt.Errorf("--max-requeue must be at least %s (got %s)", MinMaxRequeue, o.MaxRequeue)
	}
	return nil
}

package manager

import "github.com/go-logr/logr"

// maxLogVerbosity caps the verbosity of every log line the manager writes,
// its own and client-go's, whatever --zap-log-level asks for: from 8 on
// client-go logs the bodies of its requests and responses, and those of
// Keyward's Secrets hold key material (docs/security.md).
const maxLogVerbosity = 7

// capVerbosity returns log with every line above max dropped.
func capVerbosity(log logr.Logger, max int) logr.Logger {
	return logr.New(&verbosityCap{sink: log.GetSink(), max: max})
}

type verbosityCap struct {
	sink logr.LogSink
	max  int
}

func (c *verbosityCap) Init(info logr.RuntimeInfo) { c.sink.Init(info) }

func (c *verbosityCap) Enabled(level int) bool { return level <= c.max && c.sink.Enabled(level) }

func (c *verbosityCap) Info(level int, msg string, keysAndValues ...any) {
	if level <= c.max {
		c.sink.Info(level, msg, keysAndValues...)
	}
}

func (c *verbosityCap) Error(err error, msg string, keysAndValues ...any) {
	c.sink.Error(err, msg, keysAndValues...)
}

func (c *verbosityCap) WithValues(keysAndValues ...any) logr.LogSink {
	return &verbosityCap{sink: c.sink.WithValues(keysAndValues...), max: c.max}
}

func (c *verbosityCap) WithName(name string) logr.LogSink {
	return &verbosityCap{sink: c.sink.WithName(name), max: c.max}
}

// WithCallDepth keeps the caller's file and line right in the log lines.
func (c *verbosityCap) WithCallDepth(depth int) logr.LogSink {
	if s, ok := c.sink.(logr.CallDepthLogSink); ok {
		return &verbosityCap{sink: s.WithCallDepth(depth + 1), max: c.max}
	}
	return c
}

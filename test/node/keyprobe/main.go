// Command keyprobe is the node suite's workload (test/node): a Pod that calls
// the verifier with the key it was given, as a client of an API would, and
// reports each answer to the suite. It reads the key afresh from a mounted
// Secret file before every call (so it sees the kubelet's refresh) and from
// an environment variable (set once, from envFrom). A report names the
// source, the HTTP status and a fingerprint of the key (the first 16 hex
// digits of its SHA-256), never the key.
//
//	KEY_FILE     file holding the key (a Secret volume), optional
//	KEY_ENV      name of the environment variable holding the key, optional
//	VERIFY_URL   the verifier's /v1/auth URL
//	REPORT_URL   where reports are POSTed
//	POD_NAME     the Pod's name, sent with each report
//	INTERVAL     time between rounds (Go duration, default 500ms)
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// Report is one call's outcome.
type Report struct {
	Pod         string `json:"pod"`
	Source      string `json:"source"` // "file" or "env"
	Status      int    `json:"status"` // 0 when the call failed
	Fingerprint string `json:"fingerprint"`
	Error       string `json:"error,omitempty"`
}

func main() {
	interval := 500 * time.Millisecond
	if v := os.Getenv("INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "INTERVAL:", err)
			os.Exit(2)
		}
		interval = d
	}
	c := &http.Client{Timeout: 5 * time.Second}
	for {
		if f := os.Getenv("KEY_FILE"); f != "" {
			data, err := os.ReadFile(f)
			r := Report{Source: "file"}
			if err != nil {
				r.Error = "reading the key file failed"
			} else {
				r = call(c, "file", strings.TrimSpace(string(data)))
			}
			send(c, r)
		}
		if e := os.Getenv("KEY_ENV"); e != "" {
			send(c, call(c, "env", os.Getenv(e)))
		}
		time.Sleep(interval)
	}
}

func call(c *http.Client, source, key string) Report {
	sum := sha256.Sum256([]byte(key))
	r := Report{Source: source, Fingerprint: hex.EncodeToString(sum[:8])}
	req, err := http.NewRequest(http.MethodGet, os.Getenv("VERIFY_URL"), nil)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		r.Error = "calling the verifier failed"
		return r
	}
	_ = resp.Body.Close()
	r.Status = resp.StatusCode
	return r
}

func send(c *http.Client, r Report) {
	r.Pod = os.Getenv("POD_NAME")
	b, _ := json.Marshal(r)
	resp, err := c.Post(os.Getenv("REPORT_URL"), "application/json", bytes.NewReader(b))
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return
	}
	_ = resp.Body.Close()
}

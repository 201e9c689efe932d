package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Redact(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	const node, token, secret = "victim-node-1", "tok-abc", "sec-xyz"
	ref := Ref(node)

	log.Info("registered", "app", "apns", "node", node)
	log.Warn("push failed", slog.Group("push", "node", node, "token", token))
	log.With("node", node, "secret", secret).Error("with attrs")
	log.Debug("push token", "node", node, "token", token)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("log:\n%s", buf.String())
	}
	for _, l := range lines[:3] {
		if strings.Contains(l, node) || strings.Contains(l, token) || strings.Contains(l, secret) {
			t.Errorf("above debug: %s", l)
		}
		if !strings.Contains(l, "node_ref="+ref) {
			t.Errorf("no node_ref=%s in %s", ref, l)
		}
	}
	if !strings.Contains(lines[3], "node="+node) || !strings.Contains(lines[3], "token="+token) {
		t.Errorf("debug lines keep everything: %s", lines[3])
	}
}

// The documented way to find a node's ref:
// printf %s NODE | sha256sum | cut -c1-12
func TestRef(t *testing.T) {
	for node, want := range map[string]string{"n1": "676b8bb84ce7", "victim-node-1": "90c17cde6c3c"} {
		if got := Ref(node); got != want {
			t.Errorf("Ref(%q) = %q, want %q", node, got, want)
		}
	}
}

// TestRedactKeepsGroups: above debug, a logger's group still names its
// attributes, the node's ref included, as it does at debug: an operator's
// query for push.node_ref finds the lines.
func TestRedactKeepsGroups(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Redact(slog.NewTextHandler(&buf, nil))).WithGroup("push")
	const node = "victim-node-1"
	log.Info("sent", "node", node, "app", "ios")
	if l := buf.String(); !strings.Contains(l, "push.node_ref="+Ref(node)) || !strings.Contains(l, "push.app=ios") || strings.Contains(l, node) {
		t.Fatalf("log: %s", l)
	}
}

package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMERegistryCopiesArePrivate guards the README's advice on
// copying the registry by other means than the backup command: the
// sqlite3 shell creates the file its .backup (or .output of a .dump)
// writes with the umask's mode, 0644 under the usual 0022, so a copy
// made as the README said was readable by every user of the machine,
// with every device's token and secret in it. Each such command the
// README gives must run under umask 077.
func TestREADMERegistryCopiesArePrivate(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`\s+`).ReplaceAllString(string(b), " ")
	for _, span := range regexp.MustCompile("`[^`]*sqlite3[^`]*`").FindAllString(text, -1) {
		if !strings.Contains(span, ".backup") && !strings.Contains(span, ".dump") && !strings.Contains(span, "VACUUM INTO") {
			continue
		}
		if !strings.Contains(span, "umask 077") {
			t.Errorf("README copies the registry with the umask's mode (0644 under 0022): %s", span)
		}
	}
}

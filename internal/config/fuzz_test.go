package config

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary configuration files to Parse: it never
// panics, and a file it accepts is valid.
func FuzzParse(f *testing.F) {
	f.Add("data_dir = \"/var/lib/push-appserver\"\nlog_level = \"debug\"\nrate_limit = 5\n[http]\nlisten = \"127.0.0.1:5280\"\n")
	f.Add("[apps.ios]\nkind = \"apns\"\ntopic = \"t\"\n[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\ndefault_app = \"ios\"\n")
	f.Add("push_appserver_rate_limit = 3\npush_appserver_apns_sandbox = false\npush_appserver_fcm_key = \"x\"\n")
	f.Add("pprof_listen = \"127.0.0.1:6060\"\nmetrics_listen = \":9100\"\nmax_registrations_per_domain = 10\nstrict_registration = true\nregistration_cache = 0\n")
	f.Add("rate_limit = \"1m30s\"\npush_timeout = -1\n[apps.a]\nkind = \"fcm\"\nttl = 1e300\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		// "file:" secrets read files: not the parser's business, and a
		// fuzzer could name a device that never ends.
		if strings.Contains(text, "file:") {
			t.Skip()
		}
		c, err := Parse(text, dir)
		if err != nil {
			return
		}
		if ps := c.validate(); len(ps) != 0 {
			t.Fatalf("accepted a config that does not validate: %v", ps)
		}
		if c.RateLimit < 0 || c.PushTimeout <= 0 {
			t.Fatalf("accepted durations %v %v", c.RateLimit, c.PushTimeout)
		}
	})
}

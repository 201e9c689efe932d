package config

import (
	"strings"
	"testing"
	"time"
)

// The TOML decoder takes option names in any case. One written in
// another case works as written, "off" included (an explicit 0 or "" is
// told from an absent option by its name in any case: [HTTP] listen = ""
// serves no HTTP API, Redelivery = 0 turns redelivery off), and draws a
// warning naming the lower-case spelling.
func TestMixedCaseOffValueNotReplacedByDefault(t *testing.T) {
	for _, tc := range []struct {
		text string
		off  func(*Config) bool
	}{
		{"[HTTP]\nlisten = \"\"\n", func(c *Config) bool { return c.HTTP.Listen == "" }},
		{"Rate_Limit = 0\n", func(c *Config) bool { return c.RateLimit == 0 }},
		{"Registration_Cache = 0\n", func(c *Config) bool { return c.RegistrationCache == 0 }},
		{"Outage_Grace = 0\n", func(c *Config) bool { return c.OutageGrace == 0 }},
		{"Redelivery = 0\n", func(c *Config) bool { return c.Redelivery == 0 }},
		{"[http]\nTrusted_Proxies = []\n", func(c *Config) bool { return len(c.HTTP.TrustedProxies) == 0 }},
	} {
		c, err := Parse(tc.text, t.TempDir())
		if err != nil {
			t.Errorf("%q: %v", tc.text, err)
			continue
		}
		if !tc.off(c) {
			t.Errorf("%q: the value is the default, not off (listen %q rate %v cache %d grace %v redelivery %v)",
				tc.text, c.HTTP.Listen, c.RateLimit.D(), c.RegistrationCache, c.OutageGrace.D(), c.Redelivery.D())
		}
		if !strings.Contains(strings.Join(c.Warnings, "\n"), "option names are lower case") {
			t.Errorf("%q: no warning: %q", tc.text, c.Warnings)
		}
	}
}

// Two spellings of one option are two TOML keys the decoder would take
// into one field in map order, so that one file loaded differently from
// one start (or reload) to the next: they are refused.
func TestSameKeyTwoCasesIsDeterministic(t *testing.T) {
	const text = "rate_limit = 3\nRate_Limit = 1\n[apps.ios]\nkind = \"log\"\nKind = \"webpush\"\n"
	for range 20 {
		if _, err := Parse(text, t.TempDir()); err == nil || !strings.Contains(err.Error(), "the two cases name one option") {
			t.Fatalf("one option written in two cases: %v", err)
		}
	}
}

// push_appserver_rate_limit is float seconds: one past what a duration
// holds (1e10, inf, nan) is refused, not wrapped into a negative one,
// which would pass the check against push_timeout and turn the throttle
// off, where the README has only 0 do that.
func TestSeedRateLimitOverflowRefused(t *testing.T) {
	for _, v := range []string{"1e10", "inf", "nan"} {
		c, err := Parse("push_appserver_rate_limit = "+v+"\n", t.TempDir())
		if err == nil {
			t.Errorf("push_appserver_rate_limit = %s: loads, rate_limit %v", v, c.RateLimit.D())
		}
	}
}

// max_in_flight has an upper bound: the component sizes its waiting
// places at a few times it (see component.TestHugeMaxInFlightDoesNotPanic).
func TestHugeMaxInFlightRefused(t *testing.T) {
	c, err := Parse("[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\nmax_in_flight = 4611686018427387904\n", t.TempDir())
	if err == nil {
		t.Fatalf("max_in_flight 2^62 loads: %d", c.Components[0].MaxInFlight)
	}
}

// token_block is added to now and stored (SQLite) as UnixNano, which
// wraps past 2262: one longer than 200 years is refused, and 200 years,
// the longest, loads.
func TestTokenBlockPast2262Refused(t *testing.T) {
	c, err := Parse("token_block = \"2190000h\"\n", t.TempDir())
	if err == nil {
		until := time.Now().Add(c.TokenBlock.D())
		t.Fatalf("token_block %v loads; now+block = %v, as SQLite stores it: %v", c.TokenBlock.D(), until.Year(), time.Unix(0, until.UnixNano()).Year())
	}
	if _, err := Parse("token_block = \"1752000h\"\n", t.TempDir()); err != nil {
		t.Fatalf("token_block of 200 years: %v", err)
	}
}

// endpoint_hosts entries the guard could never match are refused, not
// left to refuse every push to the hosts meant: "*", a trailing or
// leading dot, a "*" elsewhere than a leading "*.".
func TestEndpointHostsThatNeverMatchRefused(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "vapid.pem", "x")
	for _, h := range []string{"*", "fcm.googleapis.com.", ".push.apple.com", "*push.apple.com", "fcm.*.com"} {
		_, err := Parse("[apps.web]\nkind = \"webpush\"\nvapid_key_file = \"vapid.pem\"\nvapid_subject = \"mailto:ops@example.org\"\nendpoint_hosts = [\""+h+"\"]\n", dir)
		if err == nil || !strings.Contains(err.Error(), "endpoint_hosts") {
			t.Errorf("endpoint_hosts = [%q]: %v", h, err)
		}
	}
}

// A DSN written under [database] while driver stays "sqlite" (the
// README's example has driver = "sqlite" and dsn commented out) draws a
// warning: the instance runs on its own SQLite file, and several such
// instances would each answer item-not-found (cancel) for the others'
// registrations.
func TestDSNWithSQLiteDriverNotSilent(t *testing.T) {
	c, err := Parse("[database]\ndsn = \"postgres://u:p@db.example.org/push\"\n", t.TempDir())
	if err == nil && len(c.Warnings) == 0 {
		t.Fatalf("dsn set, driver %q, registry %s: no error, no warning", c.Database.Driver, c.Database.Path)
	}
}

// A non-table where a table belongs, which the TOML decoder takes as
// nothing (tigase_providers = "ios" would turn Tigase's commands off), is
// refused.
func TestMapOptionWrongTypeRefused(t *testing.T) {
	for _, text := range []string{
		"[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\ntigase_providers = \"apns\"\n",
		"[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\npublish_options_apps = \"apns\"\n",
		"apps = \"apns\"\n",
	} {
		if _, err := Parse(text, t.TempDir()); err == nil {
			t.Errorf("%q loads", text)
		}
	}
}

// The component JID is a domain as XMPP servers write it: one in another
// case is taken in lower case (Prosody closes the stream, invalid-from,
// on a ping from another spelling: e2e TestMixedCaseComponentJID), and a
// name that is not a domain ("push_example", a tab) is refused.
func TestComponentJIDNormalisedOrRefused(t *testing.T) {
	c, err := Parse("[[component]]\njid = \"Push.Example.ORG\"\nsecret = \"s\"\n", t.TempDir())
	if err == nil && c.Components[0].JID != "push.example.org" {
		t.Errorf("jid %q loads as %q", "Push.Example.ORG", c.Components[0].JID)
	}
	for _, j := range []string{"push_example.org", "\tpush.example.org", "push:example"} {
		if _, err := Parse("[[component]]\njid = \""+j+"\"\nsecret = \"s\"\n", t.TempDir()); err == nil {
			t.Errorf("jid %q loads", j)
		}
	}
}

// An app's name is the type its registrations carry, and is kept as
// written however the table holding it is spelled: [Apps.MyLog] is app
// "MyLog", and the warning about "Apps" must not tell the operator to
// rename the app (write apps.mylog), which would leave every
// registration of type MyLog without its app. Two apps whose names
// differ only in case are two apps, not one option written twice.
func TestAppNameKeptUnderMixedCaseApps(t *testing.T) {
	c, err := Parse("[Apps.MyLog]\nkind = \"log\"\n", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.Apps["MyLog"] == nil {
		t.Fatalf("apps: %v, want MyLog", c.Apps)
	}
	for _, w := range c.Warnings {
		if strings.Contains(w, "mylog") {
			t.Errorf("warning renames the app: %q", w)
		}
	}
	if _, err := Parse("[Apps.Log]\nkind = \"log\"\n[apps.log]\nkind = \"log\"\n", t.TempDir()); err != nil {
		t.Errorf("two apps Log and log: %v", err)
	}
}

// A component JID written as an A-label cannot connect: the handshake
// introduces the component by its U-label, which an XMPP server that
// names it by the A-label knows as no component (Prosody: host-unknown).
// It is refused with the spelling to use.
func TestALabelComponentJIDRefused(t *testing.T) {
	_, err := Parse("[[component]]\njid = \"push.xn--bcher-kva.example\"\nsecret = \"s\"\n", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "push.bücher.example") {
		t.Fatalf("an A-label component JID: %v", err)
	}
	if _, err := Parse("[[component]]\njid = \"push.bücher.example\"\nsecret = \"s\"\n", t.TempDir()); err != nil {
		t.Fatalf("a U-label component JID: %v", err)
	}
}

// Names that TOML must quote (a Tigase provider, a
// publish-options "service:mode", an app named by a bundle ID) are
// written as they must be: no warning, and surely none telling the
// operator to write them unquoted, which TOML refuses or reads as
// nested tables.
func TestQuotedNamesNoCaseWarning(t *testing.T) {
	c, err := Parse(`[apps."eu.siacs.conversations"]
kind = "log"
[apps.ios]
kind = "log"
[[component]]
jid = "push.example.org"
secret = "s"
default_app = "ios"
tigase_providers = { "tigase:messenger:apns:1" = "ios" }
publish_options_tokens = true
publish_options_apps = { apns = "ios", "fcm:prod" = "ios" }
`, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings for a configuration written as README shows it:\n%s", strings.Join(c.Warnings, "\n"))
	}
}

// TestPushTimeoutsThatFailEveryPushRefused guards push_timeout and an
// app's push_deadline against values no push service answers within: a
// typo such as "15ms" for "15s" (or a fraction of a second written as
// seconds) loaded as "configuration OK", and every push, its
// redeliveries included, then ran out of time and was answered wait:
// no device was woken while the server looked healthy. Like ttl and
// keepalive, they must be at least a second (0 keeps the default).
func TestPushTimeoutsThatFailEveryPushRefused(t *testing.T) {
	for _, tc := range []struct{ text, key string }{
		{"rate_limit = 0\npush_timeout = \"1ns\"\n", "push_timeout"},
		{"rate_limit = 0\npush_timeout = \"15ms\"\n", "push_timeout"},
		{"rate_limit = 0\npush_timeout = 0.5\n", "push_timeout"},
		{"[apps.ios]\nkind = \"log\"\npush_deadline = \"5ms\"\n", "apps.ios.push_deadline"},
		{"[apps.ios]\nkind = \"log\"\npush_deadline = 0.001\n", "apps.ios.push_deadline"},
	} {
		_, err := Parse(tc.text, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%q: %v, want a problem with %s", tc.text, err, tc.key)
		}
	}
	for _, text := range []string{
		"rate_limit = 0\npush_timeout = \"1s\"\n",
		"push_timeout = 0\n",
		"[apps.ios]\nkind = \"log\"\npush_deadline = \"1s\"\n",
		"[apps.ios]\nkind = \"log\"\npush_deadline = 0\n",
	} {
		if _, err := Parse(text, t.TempDir()); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
}

// A statement_timeout under a millisecond went to PostgreSQL as 0, no
// bound at all, and one of a few milliseconds fails the registry's
// statements: both refused, as the default and sane values are not.
func TestStatementTimeoutBounds(t *testing.T) {
	base := "[database]\ndriver = \"postgres\"\ndsn = \"postgres://localhost/push\"\n"
	for _, v := range []string{"\"500us\"", "\"10ms\"", "0.05"} {
		if _, err := Parse(base+"statement_timeout = "+v+"\n", t.TempDir()); err == nil || !strings.Contains(err.Error(), "database.statement_timeout:") {
			t.Errorf("statement_timeout = %s: %v, want a problem with database.statement_timeout", v, err)
		}
	}
	for _, v := range []string{"\"100ms\"", "\"5s\"", "0"} {
		if _, err := Parse(base+"statement_timeout = "+v+"\n", t.TempDir()); err != nil {
			t.Errorf("statement_timeout = %s: %v", v, err)
		}
	}
}

// A mod_push_appserver option that overrides the same setting written
// under our own name in the file says so, as one overriding an app's
// does: the file's rate_limit or debugging was otherwise dropped without
// a word. The same value twice is no override.
func TestSeedOptionOverridingTopLevelWarned(t *testing.T) {
	for _, tc := range []struct {
		text, warn string
	}{
		{"rate_limit = 2\npush_appserver_rate_limit = 7\n", "push_appserver_rate_limit overrides rate_limit"},
		{"debugging = false\npush_appserver_debugging = true\n", "push_appserver_debugging overrides debugging"},
		{"rate_limit = 7\npush_appserver_rate_limit = 7\n", ""},
		{"push_appserver_rate_limit = 7\n", ""},
	} {
		c, err := Parse(tc.text, t.TempDir())
		if err != nil {
			t.Fatalf("%q: %v", tc.text, err)
		}
		got := strings.Join(c.Warnings, "\n")
		if tc.warn == "" && strings.Contains(got, "overrides") || tc.warn != "" && !strings.Contains(got, tc.warn) {
			t.Errorf("%q: warnings %q, want %q", tc.text, got, tc.warn)
		}
	}
}

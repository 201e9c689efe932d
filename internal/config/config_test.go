package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

func TestDefaults(t *testing.T) {
	c := Default()
	if c.HTTP.Listen != "127.0.0.1:5280" || c.Debugging || c.RateLimit.D() != 5*time.Second {
		t.Fatalf("defaults: listen %q debugging %v rate %v", c.HTTP.Listen, c.Debugging, c.RateLimit.D())
	}
	if c.Database.Path != filepath.Join("data", "registry.db") {
		t.Fatalf("database path %q", c.Database.Path)
	}
	for _, n := range []string{"apns", "fcm"} {
		if a := c.Apps[n]; a == nil || a.Kind != KindLog {
			t.Fatalf("default app %s: %+v", n, a)
		}
	}
	if errs := c.validate(); len(errs) != 0 {
		t.Fatalf("defaults do not validate: %v", errs)
	}
	// What mod_push_appserver's last version shows, never "dummy"; a
	// push's retries end well before an XMPP server's IQ timeout.
	a := c.Apps["apns"]
	if a.AlertTitle != "New Message" || a.AlertBody != "New Message" || a.PushDeadline.D() != 5*time.Second {
		t.Fatalf("app defaults: title %q body %q deadline %v", a.AlertTitle, a.AlertBody, a.PushDeadline.D())
	}
	// mod_push_appserver's push_appserver_apns_sandbox defaults to true:
	// an APNS app configured without it pushes to the sandbox, as there.
	if a.Sandbox == nil || !*a.Sandbox {
		t.Fatalf("app default sandbox %v, want true", a.Sandbox)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSeedOptions(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "push.pem", "x")
	writeFile(t, dir, "push.key", "x")
	c, err := Parse(`
push_appserver_debugging = true
push_appserver_rate_limit = 0
push_appserver_apns_cert = "push.pem"
push_appserver_apns_key = "push.key"
push_appserver_apns_topic = "im.example.app"
push_appserver_apns_sandbox = false
push_appserver_apns_push_alert = "New message"
push_appserver_apns_push_ttl = 3600
push_appserver_apns_push_priority = "voip"
push_appserver_apns_mutable_content = false
push_appserver_apns_feedback_request_interval = 86400
push_appserver_fcm_key = "legacy"
`, dir)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Apps["apns"]
	switch {
	case !c.Debugging, c.RateLimit != 0:
		t.Fatalf("debugging %v rate %v", c.Debugging, c.RateLimit.D())
	case a == nil || a.Kind != KindAPNS:
		t.Fatalf("apns app %+v", a)
	case a.CertFile != filepath.Join(dir, "push.pem"), a.KeyFile != filepath.Join(dir, "push.key"):
		t.Fatalf("cert %q key %q", a.CertFile, a.KeyFile)
	case *a.Sandbox, *a.MutableContent, a.AlertBody != "New message" || a.AlertTitle != "New Message", a.TTL.D() != time.Hour, a.Priority != "voip", a.Topic != "im.example.app":
		t.Fatalf("apns options %+v", a)
	}
	if _, ok := c.Apps["fcm"]; ok {
		t.Fatalf("obsolete fcm key created an app")
	}
	if got := strings.Join(c.Obsolete, ","); got != "push_appserver_apns_feedback_request_interval,push_appserver_fcm_key" {
		t.Fatalf("obsolete %q", got)
	}
}

func TestProblemsNameTheirKey(t *testing.T) {
	tests := []struct {
		name, toml string
		want       []string
	}{
		{"unknown option", `bogus = 1`, []string{"bogus: unknown option"}},
		{"unknown nested option", "[http]\nlisten_on = \"x\"", []string{"http.listen_on: unknown option"}},
		{"bad syntax", `rate_limit = `, []string{"config:"}},
		{"bad duration", `rate_limit = "fast"`, []string{"rate_limit"}},
		{"bad listen", "[http]\nlisten = \"nope\"", []string{"http.listen: want host:port"}},
		{"bad kind", "[apps.x]\nkind = \"gcm\"", []string{"apps.x.kind: want apns, fcm, webpush or log"}},
		{"bad priority", "[apps.x]\npriority = \"urgent\"", []string{"apps.x.priority"}},
		{"apns without topic and credentials", "[apps.ios]\nkind = \"apns\"", []string{"apps.ios.topic: required", "apps.ios.cert_file: kind apns needs credentials"}},
		{"apns missing cert file", "[apps.ios]\nkind = \"apns\"\ntopic = \"t\"\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.key\"", []string{"apps.ios.cert_file:", "apps.ios.key_file:"}},
		{"apns token incomplete", "[apps.ios]\nkind = \"apns\"\ntopic = \"t\"\nkey_id = \"K\"", []string{"apps.ios.token_key_file: token auth needs"}},
		{"fcm without account", "[apps.a]\nkind = \"fcm\"", []string{"apps.a.service_account_file: required"}},
		{"ttl under a second", "[apps.a]\nkind = \"log\"\nttl = \"500ms\"", []string{"apps.a.ttl: want 0 (the service's default) or at least a second"}},
		{"fcm bad priority", "[apps.a]\nkind = \"fcm\"\nservice_account_file = \"/x\"\nandroid_priority = \"max\"", []string{"apps.a.android_priority"}},
		{"webpush without key and subject", "[apps.web]\nkind = \"webpush\"", []string{"apps.web.vapid_key_file: required", "apps.web.vapid_subject: required"}},
		{"webpush bad subject and missing key", "[apps.web]\nkind = \"webpush\"\nvapid_key_file = \"/nonexistent.pem\"\nvapid_subject = \"ops@example.org\"", []string{"apps.web.vapid_key_file:", "apps.web.vapid_subject: required"}},
		{"webpush endpoint guard options", "[apps.web]\nkind = \"webpush\"\nendpoint = \"https://x\"\nendpoint_ports = [0]\nendpoint_hosts = [\"https://fcm.googleapis.com\"]\nttl = \"700h\"", []string{"apps.web.endpoint: not used", "apps.web.endpoint_ports: bad port 0", "apps.web.endpoint_hosts: want host names", "apps.web.ttl:"}},
		{"webpush command unknown app", "[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\nregister_push_webpush_app = \"web\"", []string{"component[0].register_push_webpush_app: no app named \"web\""}},
		{"component without jid and secret", "[[component]]\naddress = \"localhost:5347\"", []string{"component[0].jid: required", "component[0].secret: required"}},
		{"component secret from unset env", "[[component]]\njid = \"push.example.org\"\nsecret = \"env:PUSH_APPSERVER_TEST_UNSET\"", []string{"component[0].secret: environment variable PUSH_APPSERVER_TEST_UNSET is not set"}},
		{"component unknown app", "[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\ndefault_app = \"nope\"", []string{"component[0].default_app: no app named \"nope\""}},
		{"component keepalive too short", "[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\nkeepalive = \"100ms\"", []string{"component[0].keepalive: must be at least 1s"}},
		{"tigase provider unknown app", "[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\ntigase_providers = { \"tigase:messenger:apns:1\" = \"ios\" }", []string{"component[0].tigase_providers: provider \"tigase:messenger:apns:1\": no app named \"ios\""}},
		{"tokenless unknown app", "[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\ntokenless = true\ntokenless_app = \"monal\"", []string{"component[0].tokenless_app: no app named \"monal\""}},
		{"publish-options unknown app", "[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\npublish_options_apps = { apns = \"ios\" }", []string{"component[0].publish_options_apps: service \"apns\": no app named \"ios\""}},
		{"seed option negative", `push_appserver_rate_limit = -1`, []string{"push_appserver_rate_limit: must not be negative"}},
		{"bad log level", `log_level = "verbose"`, []string{"log_level: want debug, info, warn or error"}},
		{"log app with a push service's setting", "[apps.a]\nkind = \"log\"\ntopic = \"org.example.app\"", []string{"apps.a.kind: \"log\" only logs pushes and sends none, but topic is set"}},
		{"fcm ttl over 4 weeks", "[apps.a]\nkind = \"fcm\"\nservice_account_file = \"/x\"\nttl = \"700h\"", []string{"apps.a.ttl: FCM allows at most 4 weeks"}},
		{"tls_listen without certificate", "[http]\ntls_listen = \"127.0.0.1:5443\"", []string{"http.tls_listen: needs http.tls_cert_file and http.tls_key_file"}},
		{"component max_in_flight negative", "[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\nmax_in_flight = -1", []string{"component[0].max_in_flight: want 1 to"}},
		{"seed option wrong type", `push_appserver_apns_sandbox = "yes"`, []string{"push_appserver_apns_sandbox"}},
		{"pprof on all interfaces", `pprof_listen = ":6060"`, []string{"pprof_listen: \":6060\" is not a loopback address"}},
		{"pprof on a public address", `pprof_listen = "192.0.2.1:6060"`, []string{"pprof_listen:", "pprof_allow_remote"}},
		{"bad metrics_listen", `metrics_listen = "nope"`, []string{"metrics_listen: want host:port"}},
		{"negative quota", `max_registrations_per_domain = -1`, []string{"max_registrations_per_domain: must not be negative"}},
		{"negative cache", `registration_cache = -5`, []string{"registration_cache: must not be negative"}},
		{"database driver", "[database]\ndriver = \"mysql\"", []string{"database.driver: want sqlite or postgres"}},
		{"postgres without dsn", "[database]\ndriver = \"postgres\"", []string{"database.dsn: required"}},
		{"postgres dsn from unset env", "[database]\ndriver = \"postgres\"\ndsn = \"env:PUSH_APPSERVER_TEST_UNSET\"", []string{"database.dsn: environment variable PUSH_APPSERVER_TEST_UNSET is not set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.toml, t.TempDir())
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// The outage grace and redelivery are ten minutes unless configured; 0
// turns them off, which appserver takes as a negative duration (its 0 is
// its default).
func TestOffableDurations(t *testing.T) {
	for _, tt := range []struct {
		toml   string
		option func(*Config) time.Duration
		want   time.Duration
	}{
		{"", (*Config).OutageGraceOption, appserver.DefaultOutageGrace},
		{`outage_grace = "30m"`, (*Config).OutageGraceOption, 30 * time.Minute},
		{`outage_grace = "0s"`, (*Config).OutageGraceOption, -1},
		{"", (*Config).RedeliveryOption, appserver.DefaultRedelivery},
		{`redelivery = "1h"`, (*Config).RedeliveryOption, time.Hour},
		{`redelivery = 0`, (*Config).RedeliveryOption, -1},
	} {
		c, err := Parse(tt.toml, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := tt.option(c); got != tt.want {
			t.Errorf("%q: option %v, want %v", tt.toml, got, tt.want)
		}
	}
	for toml, warned := range map[string]bool{`redelivery = "1h"`: false, `redelivery = "6h"`: true} {
		c, err := Parse(toml, "")
		if err != nil || (len(c.Warnings) == 1) != warned || warned && !strings.Contains(c.Warnings[0], "redelivery: 6h0m0s sends a failed push that late") {
			t.Errorf("%s: %v, warnings %q", toml, err, c.Warnings)
		}
	}
	for _, key := range []string{"outage_grace", "redelivery"} {
		if _, err := Parse(key+` = "-1m"`, ""); err == nil || !strings.Contains(err.Error(), `"`+key+`"): must not be negative`) {
			t.Errorf("a negative %s: %v", key, err)
		}
	}
}

// The registration cache holds 50,000 unless configured; 0 turns it off,
// which appserver takes as a negative size (its 0 is its default).
func TestRegistrationCache(t *testing.T) {
	for _, tt := range []struct {
		toml       string
		want, size int
	}{
		{"", appserver.DefaultCacheSize, appserver.DefaultCacheSize},
		{"registration_cache = 200000", 200000, 200000},
		{"registration_cache = 0", 0, -1},
	} {
		c, err := Parse(tt.toml, "")
		if err != nil {
			t.Fatal(err)
		}
		if c.RegistrationCache != tt.want || c.CacheSize() != tt.size {
			t.Errorf("%q: registration_cache %d, cache size %d; want %d and %d", tt.toml, c.RegistrationCache, c.CacheSize(), tt.want, tt.size)
		}
	}
	if d := Default(); *d.MaxBlockedTokens != appserver.DefaultMaxBlockedTokens {
		t.Errorf("default max_blocked_tokens %d", *d.MaxBlockedTokens)
	}
	if c, err := Parse("max_blocked_tokens = 0", ""); err != nil || *c.MaxBlockedTokens != 0 {
		t.Errorf("max_blocked_tokens = 0: %v", err)
	}
	if _, err := Parse("max_blocked_tokens = -1", ""); err == nil || !strings.Contains(err.Error(), "max_blocked_tokens: must not be negative") {
		t.Errorf("a negative max_blocked_tokens: %v", err)
	}
	if d := Default(); *d.AccountRegisterLimit != appserver.DefaultAccountRegisterLimit {
		t.Errorf("default account_register_limit %d", *d.AccountRegisterLimit)
	}
	if c, err := Parse("account_register_limit = 0", ""); err != nil || *c.AccountRegisterLimit != 0 {
		t.Errorf("account_register_limit = 0: %v", err)
	}
	if _, err := Parse("account_register_limit = -1", ""); err == nil || !strings.Contains(err.Error(), "account_register_limit: must not be negative") {
		t.Errorf("a negative account_register_limit: %v", err)
	}
	if d := Default(); d.RegistrationCache != appserver.DefaultCacheSize {
		t.Errorf("default %d", d.RegistrationCache)
	}
	if d := Default(); *d.RateLimitPerToken != appserver.DefaultRateLimitPerToken {
		t.Errorf("default rate_limit_per_token %d", *d.RateLimitPerToken)
	}
	if c, err := Parse("rate_limit_per_token = 0", ""); err != nil || *c.RateLimitPerToken != 0 {
		t.Errorf("rate_limit_per_token = 0: %v", err)
	}
	if _, err := Parse("rate_limit_per_token = -1", ""); err == nil || !strings.Contains(err.Error(), "rate_limit_per_token: must not be negative") {
		t.Errorf("a negative rate_limit_per_token: %v", err)
	}
}

// The per-client registration limit is on by default, behind a proxy on
// the machine; an empty list of proxies trusts none.
func TestRegisterLimit(t *testing.T) {
	for _, tt := range []struct {
		toml    string
		limit   int
		proxies string
	}{
		{"", httpapi.DefaultRegisterLimit, "[127.0.0.0/8 ::1/128 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7]"},
		{"[http]\nregister_limit = 0", 0, "[127.0.0.0/8 ::1/128 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7]"},
		{"[http]\nregister_limit = 600\ntrusted_proxies = []", 600, "[]"},
		{`[http]
trusted_proxies = ["10.1.2.3/8", "192.0.2.1", "2001:db8::/32", "::ffff:192.0.2.2"]`, httpapi.DefaultRegisterLimit, "[10.0.0.0/8 192.0.2.1/32 2001:db8::/32 192.0.2.2/32]"},
		{`[http]
trusted_proxies = ["::ffff:192.0.2.0/120"]`, httpapi.DefaultRegisterLimit, "[192.0.2.0/24]"},
	} {
		c, err := Parse(tt.toml, "")
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		ps, err := c.HTTP.Proxies()
		if err != nil || *c.HTTP.RegisterLimit != tt.limit || fmt.Sprint(ps) != tt.proxies {
			t.Errorf("%q: limit %d, proxies %v (%v); want %d and %s", tt.toml, *c.HTTP.RegisterLimit, ps, err, tt.limit, tt.proxies)
		}
	}
	c, err := Parse("[http]\ntrusted_proxies = [\"0.0.0.0/0\", \"10.0.0.0/8\"]", "")
	if err != nil || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "0.0.0.0/0 trusts every address") {
		t.Errorf("a proxy list that trusts everyone: %v, warnings %q", err, c.Warnings)
	}
	if c, err := Parse("rate_limit_per_token = 0\n[http]\nregister_limit = 0\ntrusted_proxies = [\"::/0\"]", ""); err != nil || len(c.Warnings) != 0 {
		t.Errorf("trusting everyone with the limits off: %v, warnings %q", err, c.Warnings)
	}
	// rate_limit_per_token counts HTTP pushes by the client the header
	// names too.
	if c, err := Parse("[http]\nregister_limit = 0\ntrusted_proxies = [\"::/0\"]", ""); err != nil || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "rate_limit_per_token") {
		t.Errorf("trusting everyone with rate_limit_per_token on: %v, warnings %q", err, c.Warnings)
	}
	for _, tt := range []struct{ toml, want string }{
		{"[http]\nregister_limit = -1", "http.register_limit: must not be negative"},
		{`[http]
trusted_proxies = ["proxy.example.org"]`, `http.trusted_proxies: want an address or a prefix such as 10.0.0.0/8, got "proxy.example.org"`},
		{`[http]
trusted_proxies = ["::ffff:0.0.0.0/80"]`, `an IPv4-mapped prefix shorter than /96`},
	} {
		if _, err := Parse(tt.toml, ""); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.toml, err, tt.want)
		}
	}
}

// The per-client connection cap is on by default; 0 turns it off.
func TestMaxConnectionsPerClient(t *testing.T) {
	for _, tt := range []struct {
		toml string
		want int
	}{
		{"", httpapi.DefaultMaxConnectionsPerClient},
		{"[http]\nmax_connections_per_client = 0", 0},
		{"[http]\nmax_connections_per_client = 16", 16},
	} {
		c, err := Parse(tt.toml, "")
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if *c.HTTP.MaxConnectionsPerClient != tt.want {
			t.Errorf("%q: max_connections_per_client %d, want %d", tt.toml, *c.HTTP.MaxConnectionsPerClient, tt.want)
		}
	}
	if d := Default(); *d.HTTP.MaxConnectionsPerClient != httpapi.DefaultMaxConnectionsPerClient {
		t.Errorf("default max_connections_per_client %d", *d.HTTP.MaxConnectionsPerClient)
	}
	if _, err := Parse("[http]\nmax_connections_per_client = -1", ""); err == nil || !strings.Contains(err.Error(), "http.max_connections_per_client: must not be negative") {
		t.Errorf("a negative max_connections_per_client: %v", err)
	}
}

func TestSecurityOptions(t *testing.T) {
	c, err := Parse("strict_registration = true\nmax_registrations_per_domain = 500\nmetrics_listen = \"127.0.0.1:9100\"\npprof_listen = \"[::1]:6060\"\n", "")
	if err != nil {
		t.Fatal(err)
	}
	if !c.StrictRegistration || c.MaxRegistrationsPerDomain != 500 || c.MetricsListen != "127.0.0.1:9100" || c.PprofListen != "[::1]:6060" {
		t.Fatalf("parsed %+v", c)
	}
	if _, err := Parse("pprof_allow_remote = true\npprof_listen = \":6060\"\n", ""); err != nil {
		t.Fatalf("pprof_allow_remote: %v", err)
	}
	for _, addr := range []string{"localhost:6060", "127.0.0.2:6060"} {
		if err := CheckPprofListen(addr, false); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
	d := Default()
	if d.StrictRegistration || d.MaxRegistrationsPerDomain != 0 || d.MetricsListen != "" || d.PprofListen != "" {
		t.Fatalf("defaults %+v", d)
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "secret", "from-file\nignored")
	t.Setenv("PUSH_APPSERVER_TEST_SECRET", "from-env")
	for in, want := range map[string]string{"literal": "literal", "env:PUSH_APPSERVER_TEST_SECRET": "from-env", "file:" + f: "from-file"} {
		got, err := ResolveSecret(in)
		if err != nil || got != want {
			t.Errorf("ResolveSecret(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ResolveSecret("file:" + filepath.Join(dir, "missing")); err == nil {
		t.Error("missing secret file accepted")
	}
}

func TestFullFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "key.p8", "x")
	writeFile(t, dir, "sa.json", "{}")
	writeFile(t, dir, "vapid.pem", "x")
	path := writeFile(t, dir, "push-appserver.toml", `
data_dir = "/var/lib/push-appserver"
rate_limit = "2s"
push_timeout = 20

[http]
listen = "0.0.0.0:5280"

[[component]]
jid = "push.example.org"
address = "xmpp.example.org:5347"
secret = "s3cret"
register_push_fcm_app = ""
register_push_webpush_app = "web"

[apps.ios]
kind = "apns"
topic = "im.example.app"
token_key_file = "key.p8"
key_id = "ABC123"
team_id = "TEAM1"

[apps.android]
kind = "fcm"
service_account_file = "sa.json"
ttl = "1h"

[apps.web]
kind = "webpush"
vapid_key_file = "vapid.pem"
vapid_subject = "mailto:ops@example.org"
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.RateLimit.D() != 2*time.Second || c.PushTimeout.D() != 20*time.Second {
		t.Fatalf("durations %v %v", c.RateLimit.D(), c.PushTimeout.D())
	}
	if c.Database.Path != "/var/lib/push-appserver/registry.db" {
		t.Fatalf("db path %q", c.Database.Path)
	}
	web := c.Apps["web"]
	if web.VAPIDKeyFile != filepath.Join(dir, "vapid.pem") || !*web.Collapse || *c.Apps["ios"].Collapse ||
		len(web.EndpointPorts) != 1 || web.EndpointPorts[0] != 443 || web.AllowPrivateEndpoints || web.Priority != "auto" {
		t.Fatalf("webpush app %+v", web)
	}
	if len(c.Apps) != 3 || c.Apps["ios"].TokenKeyFile != filepath.Join(dir, "key.p8") || c.Apps["android"].TTL.D() != time.Hour {
		t.Fatalf("apps %+v", c.Apps)
	}
	cp := c.Components[0]
	if cp.KeepAlive.D() != component.DefaultKeepAlive {
		t.Errorf("component keepalive %v, want the default %v", cp.KeepAlive.D(), component.DefaultKeepAlive)
	}
	if cp.WebPushCommandApp != "web" || *cp.FCMCommandApp != "" || *cp.APNSCommandApp != "" || !*cp.V1Commands || cp.MaxInFlight != 256 {
		t.Fatalf("component defaults %+v", cp)
	}
}

// A VAPID subject at a host nobody outside can reach loads, but Apple's
// push service refuses it: said at the start and by check-config.
func TestLocalVAPIDSubjectWarned(t *testing.T) {
	key := filepath.Join(t.TempDir(), "vapid.pem")
	os.WriteFile(key, []byte("key"), 0o600)
	for _, tt := range []struct {
		subject string
		warned  bool
	}{
		{"mailto:ops@example.org", false},
		{"https://push.example.org/contact", false},
		{"mailto:admin@localhost", true},
		{"mailto:Admin@Box.Local.?subject=x", true},
		{"mailto:me@printer.lan", true},
		{"https://127.0.0.1/", true},
		{"https://[::1]:8443/", true},
		{"https://intranet.test", true},
		{"mailto:ops@10.0.0.5", true},
	} {
		c, err := Parse(fmt.Sprintf("[apps.web]\nkind = \"webpush\"\nvapid_key_file = %q\nvapid_subject = %q\n", key, tt.subject), "")
		if err != nil {
			t.Fatalf("%s: %v", tt.subject, err)
		}
		warned := len(c.Warnings) == 1 && strings.Contains(c.Warnings[0], "apps.web.vapid_subject") && strings.Contains(c.Warnings[0], "BadJwtToken")
		if warned != tt.warned || len(c.Warnings) > 1 {
			t.Errorf("%s: warnings %q, want warned %v", tt.subject, c.Warnings, tt.warned)
		}
	}
}

// An FCM app without a priority is auto, as every kind: its
// notification_title goes on pushes the user's server marked important,
// not on every receipt and chat state.
func TestDefaultPriorityIsAuto(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "sa.json", "{}")
	c, err := Parse("[apps.android]\nkind = \"fcm\"\nservice_account_file = \"sa.json\"\nnotification_title = \"New message\"\n[apps.ios]\nkind = \"apns\"\n", dir)
	if err != nil && !strings.Contains(err.Error(), "apps.ios") {
		t.Fatal(err)
	}
	for name, a := range c.Apps {
		if a.Priority != "auto" {
			t.Errorf("app %s (%s) without a priority: %q, want auto", name, a.Kind, a.Priority)
		}
	}
}

// A component's domains are taken in the form the commands see a
// sender's domain in, and anything but a domain is refused.
func TestComponentDomains(t *testing.T) {
	c, err := Parse("[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\ndomains = [\"Example.ORG\", \"other.example\"]\n", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Components[0].Domains; !slices.Equal(got, []string{"example.org", "other.example"}) {
		t.Fatalf("domains %q", got)
	}
	for _, d := range []string{"juliet@example.org", "example.org/res", ""} {
		_, err := Parse("[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\ndomains = [\""+d+"\"]\n", t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "component[0].domains") {
			t.Errorf("domain %q: %v", d, err)
		}
	}
}

// A number of seconds too large for a time.Duration is refused, not
// wrapped round to a small one.
func TestDurationOverflowRefused(t *testing.T) {
	for _, text := range []string{
		"rate_limit = 18446744074",                    // wraps to 0.29 s
		"token_block = 18446744083",                   // wraps to 9.3 s
		"[apps.a]\nkind = \"log\"\nttl = 18446744674", // wraps to 10 min
	} {
		c, err := Parse(text, t.TempDir())
		if err == nil {
			t.Errorf("%q accepted: rate_limit %v, token_block %v, apps %+v", text, c.RateLimit.D(), c.TokenBlock.D(), c.Apps)
		}
	}
}

// The same wrap-around, below zero: a negative number of seconds too
// large for a time.Duration wraps to a positive one.
func TestDurationNegativeOverflowRefused(t *testing.T) {
	for _, text := range []string{
		"redelivery = -18446744073", // wraps to +0.709551616 s... of redelivery
		"rate_limit = -18446744073", // wraps to +0.7 s
		"token_block = -9223372037", // wraps to +292 years
		"redelivery = -1e300",       // float: implementation-defined
	} {
		c, err := Parse(text, t.TempDir())
		if err == nil {
			t.Errorf("%q accepted: rate_limit %v, token_block %v, redelivery %v", text, c.RateLimit.D(), c.TokenBlock.D(), c.Redelivery.D())
		}
	}
}

// The installed file (deploy/push-appserver.toml) defines [apps.apns]
// with kind = "log". An operator moving from mod_push_appserver copies
// the module's options to the top of it, as README says they can be: the
// options configure the existing app, which stays a log app. The file
// loads without a word and every push is only logged: no device is ever
// woken, while the users' servers hear success.
func TestSeedOptionsOnInstalledLogAppRefused(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "push.pem", "x")
	writeFile(t, dir, "push.key", "x")
	installed, err := os.ReadFile("../../deploy/push-appserver.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := `
push_appserver_apns_cert = "push.pem"
push_appserver_apns_key = "push.key"
push_appserver_apns_topic = "im.example.app"
push_appserver_apns_sandbox = false
` + string(installed)
	t.Setenv("PUSH_APPSERVER_COMPONENT_SECRET", "s")
	c, err := Parse(text, dir)
	a := c.Apps["apns"]
	t.Logf("err=%v kind=%q cert=%q warnings=%q", err, a.Kind, a.CertFile, c.Warnings)
	if err == nil && a.Kind == KindLog && len(c.Warnings) == 0 {
		t.Errorf("APNS credentials and topic were put on a log app, which sends nothing; loaded without an error or warning")
	}
}

// An app written with APNS credentials but no kind (or kind = "log"
// left from the template) is a log app: pushes are answered success
// and never sent.
func TestAppWithCredentialsButNoKindRefused(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "AuthKey.p8", "x")
	writeFile(t, dir, "sa.json", "{}")
	for name, text := range map[string]string{
		"apns, no kind": `
[apps.ios]
topic          = "im.example.app"
sandbox        = false
token_key_file = "AuthKey.p8"
key_id         = "ABC123"
team_id        = "TEAM123456"
`,
		"fcm, kind left log": `
[apps.android]
kind                 = "log"
service_account_file = "sa.json"
`,
	} {
		c, err := Parse(text, dir)
		var kinds []string
		for n, a := range c.Apps {
			kinds = append(kinds, n+"="+a.Kind)
		}
		t.Logf("%s: err=%v apps=%s warnings=%q", name, err, strings.Join(kinds, ","), c.Warnings)
		if err == nil && len(c.Warnings) == 0 {
			t.Errorf("%s: push-service settings on a log app loaded without an error or warning", name)
		}
	}
}

// rate_limit at or above push_timeout: the push the throttle holds for
// the next window outlives its deadline and is dropped (see
// appserver.TestRateLimitLongerThanPushTimeoutLosesLastPush).
func TestRateLimitNotBelowPushTimeoutRefused(t *testing.T) {
	for _, text := range []string{
		"rate_limit = 20", // default push_timeout 15 s
		"rate_limit = 10\npush_timeout = \"10s\"",
		"push_appserver_rate_limit = 30",
	} {
		c, err := Parse(text, "")
		t.Logf("%q: err=%v rate=%v push_timeout=%v warnings=%q", text, err, c.RateLimit.D(), c.PushTimeout.D(), c.Warnings)
		if err == nil && len(c.Warnings) == 0 {
			t.Errorf("%q: rate_limit %v >= push_timeout %v accepted without a word", text, c.RateLimit.D(), c.PushTimeout.D())
		}
	}
}

// Two [[component]] tables for one JID, written in different case: the
// same component to the XMPP server (domains are case-insensitive), so
// the second connection is refused for ever, but the duplicate check
// compares the strings as written.
func TestComponentJIDTwiceInOtherCaseRefused(t *testing.T) {
	_, err := Parse(`
[[component]]
jid = "push.example.org"
secret = "s"
[[component]]
jid = "Push.Example.ORG"
secret = "s"
`, "")
	t.Logf("err=%v", err)
	if err == nil {
		t.Errorf("the same component JID twice (in other case) was accepted")
	}
}

// A secret written without quotes: the TOML error repeats it.
func TestUnquotedSecretNotInError(t *testing.T) {
	const secret = "correcthorsebatterystaple"
	for _, text := range []string{
		"[[component]]\njid = \"p.example.org\"\nsecret = " + secret + "\n",
		"[apps.a]\nkind = \"apns\"\nkey_password = " + secret + "\n",
	} {
		_, err := Parse(text, "")
		t.Logf("%v", err)
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("the error prints the secret")
		}
	}
}

// voip is an APNS (PushKit) push. An FCM or WebPush app configured with it
// still loads, as it did, with a warning, and pushes as high: its pushes
// went out as high anyway, but a voip push is never kept for redelivery.
func TestVoIPPriorityOutsideAPNSIsHigh(t *testing.T) {
	dir := t.TempDir()
	sa := filepath.Join(dir, "sa.json")
	key := filepath.Join(dir, "vapid.pem")
	for _, f := range []string{sa, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct{ kind, app, want string }{
		{"fcm", fmt.Sprintf("kind = \"fcm\"\nservice_account_file = %q", sa), "high"},
		{"webpush", fmt.Sprintf("kind = \"webpush\"\nvapid_key_file = %q\nvapid_subject = \"mailto:ops@example.org\"", key), "high"},
		{"log", "kind = \"log\"", "voip"},
	} {
		c, err := Parse("[apps.a]\n"+tt.app+"\npriority = \"voip\"\n", dir)
		if err != nil {
			t.Fatalf("%s: %v", tt.kind, err)
		}
		if got := c.Apps["a"].Priority; got != tt.want {
			t.Errorf("%s: priority %q, want %q", tt.kind, got, tt.want)
		}
		warned := len(c.Warnings) == 1 && strings.Contains(c.Warnings[0], "apps.a.priority: voip is an APNS push; kind "+tt.kind+" takes high, silent or auto")
		if warned != (tt.want == "high") {
			t.Errorf("%s: warnings %q", tt.kind, c.Warnings)
		}
	}
}

// check-config prints every problem: two listeners on one address would
// pass it, and serve then fail with "address already in use".
func TestListenersOnOneAddressRefused(t *testing.T) {
	for _, toml := range []string{
		"metrics_listen = \"127.0.0.1:5280\"\n[http]\nlisten = \"127.0.0.1:5280\"\n",
		"pprof_listen = \"127.0.0.1:6060\"\nmetrics_listen = \"127.0.0.1:6060\"\n",
	} {
		_, err := Parse(toml, "")
		if err == nil || !strings.Contains(err.Error(), "give each listener its own") {
			t.Errorf("%s: %v, want the second listener refused", toml, err)
		}
	}
	if _, err := Parse("metrics_listen = \"127.0.0.1:5281\"\n[http]\nlisten = \"127.0.0.1:5280\"\n", ""); err != nil {
		t.Errorf("listeners on two addresses: %v", err)
	}
}

// A key or certificate path must name a regular file: reading a FIFO (a
// secret provider's pipe) or a device waits for a writer, and a start or
// reload with it.
func TestKeyFileNotARegularFileRefused(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "AuthKey.p8"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sa.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"a FIFO":      "[apps.ios]\nkind = \"apns\"\ntopic = \"t\"\ntoken_key_file = \"AuthKey.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\n",
		"a directory": "[apps.android]\nkind = \"fcm\"\nservice_account_file = \"sa.json\"\n",
	} {
		_, err := Parse(text, dir)
		if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
			t.Errorf("%s as the key file: %v", name, err)
		}
	}
}

// key_password = "file:PATH" is read by the configuration's check, at the
// start and at every reload, in the server's signal loop: a FIFO there (a
// secret provider's pipe) must be refused as the key files are, not
// waited on until someone writes.
func TestKeyPasswordFileNotARegularFileRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "push.p12"), []byte("p12"), 0o600)
	if err := syscall.Mkfifo(filepath.Join(dir, "pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	for what, text := range map[string]string{
		"key_password": fmt.Sprintf("[apps.ios]\nkind = \"apns\"\ntopic = \"t\"\npkcs12_file = \"push.p12\"\nkey_password = \"file:%s\"\n", pw),
		"secret":       fmt.Sprintf("[[component]]\njid = \"push.example.org\"\naddress = \"127.0.0.1:5347\"\nsecret = \"file:%s\"\n", pw),
	} {
		done := make(chan error, 1)
		go func() { _, err := Parse(text, dir); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), what) {
				t.Errorf("%s from a FIFO: %v", what, err)
			}
		case <-time.After(3 * time.Second):
			// Unblock the reader so the test process can end.
			if f, err := os.OpenFile(pw, os.O_WRONLY, 0); err == nil {
				f.Close()
			}
			<-done
			t.Errorf("Parse still reading %s's FIFO after 3 s: a reload would hold the signal loop", what)
		}
	}
}

// TestListenersOnOneSocketRefused: two listeners on one socket, however
// written (a wildcard covering the other, one address spelt two ways),
// are refused, as one address written twice is: serve would fail with
// "address already in use". Addresses that bind apart stay allowed.
func TestListenersOnOneSocketRefused(t *testing.T) {
	for _, pair := range [][2]string{
		{":5280", "127.0.0.1:5280"},   // ":5280" is IPv6's wildcard, dual-stack
		{"[::]:5280", "0.0.0.0:5280"}, // likewise
		{"[::]:5280", "[::1]:5280"},   // likewise
		{"0.0.0.0:5280", "127.0.0.1:5280"},
		{"[::1]:5280", "[0::1]:5280"},        // one address
		{"127.0.0.1:5280", "localhost:5280"}, // the address Go binds for it
		{"0.0.0.0:5280", "LocalHost:5280"},
	} {
		toml := fmt.Sprintf("metrics_listen = %q\n[http]\nlisten = %q\n", pair[1], pair[0])
		_, err := Parse(toml, "")
		if err == nil || !strings.Contains(err.Error(), "give each listener its own") {
			t.Errorf("http.listen %s, metrics_listen %s: %v, want the second listener refused", pair[0], pair[1], err)
		}
	}
	for _, pair := range [][2]string{{"0.0.0.0:5280", "[::1]:5280"}, {"127.0.0.1:5280", "[::1]:5280"}, {"[::1]:5280", "[::1]:5281"}, {"localhost:5280", "[::1]:5280"}} {
		toml := fmt.Sprintf("metrics_listen = %q\n[http]\nlisten = %q\n", pair[1], pair[0])
		if _, err := Parse(toml, ""); err != nil {
			t.Errorf("http.listen %s, metrics_listen %s bind apart: %v", pair[0], pair[1], err)
		}
	}
}

// An app's alert and notification texts, which every push of it carries,
// are warned of when long: they leave the message little room within the
// 4 KiB a push service takes, or none, and every alert then fails while
// the server looks healthy. A warning, not an error: a setting that
// pushed before must not stop an upgraded server.
func TestLongAlertTextsWarned(t *testing.T) {
	for _, tt := range []struct {
		toml string
		want string
	}{
		{"[apps.ios]\nkind = \"log\"\nalert_body = \"" + strings.Repeat("x", 3000) + "\"", "apps.ios.alert_body: 3000 bytes"},
		{"[apps.android]\nkind = \"log\"\nnotification_title = \"" + strings.Repeat("x", 1025) + "\"", "apps.android.notification_title: 1025 bytes"},
		{"[apps.ios]\nkind = \"log\"\nalert_body = \"" + strings.Repeat("x", 1024) + "\"", ""},
	} {
		c, err := Parse(tt.toml, "")
		if err != nil {
			t.Fatalf("a long text refused: %v", err)
		}
		if got := strings.Join(c.Warnings, "\n"); tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("warnings %q, want %q", got, tt.want)
		}
	}
}

// TestShutdownDelay guards shutdown_delay: off unless set, so a server
// under systemd or behind a load balancer that is told first stops at
// once as before; a duration or seconds when set; refused when negative;
// and a warning when it is so long that an orchestrator's grace would
// kill the server before it drained.
func TestShutdownDelay(t *testing.T) {
	for _, tt := range []struct {
		name, text string
		want       time.Duration
		err        string
		warned     bool
	}{
		{"default", "", 0, "", false},
		{"duration", `shutdown_delay = "10s"`, 10 * time.Second, "", false},
		{"seconds", `shutdown_delay = 5`, 5 * time.Second, "", false},
		{"off", `shutdown_delay = 0`, 0, "", false},
		{"negative", `shutdown_delay = "-1s"`, 0, "must not be negative", false},
		{"long", `shutdown_delay = "2m"`, 2 * time.Minute, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.text, t.TempDir())
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ShutdownDelay.D() != tt.want {
				t.Fatalf("shutdown_delay %v, want %v", c.ShutdownDelay.D(), tt.want)
			}
			warned := slices.ContainsFunc(c.Warnings, func(w string) bool { return strings.HasPrefix(w, "shutdown_delay:") })
			if warned != tt.warned {
				t.Fatalf("warned %v, want %v: %q", warned, tt.warned, c.Warnings)
			}
		})
	}
}

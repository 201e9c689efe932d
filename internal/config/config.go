// Package config owns the server's configuration: the TOML file, its
// defaults, the option names mod_push_appserver used (accepted and mapped
// onto ours), secrets read from the environment or files, and validation
// that names the offending key.
package config

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"mellium.im/xmpp/jid"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/fcm"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// Config is the whole configuration. The zero value is not useful: use
// Default or Load.
type Config struct {
	// DataDir holds the SQLite registry. Default "data" (relative to the
	// working directory).
	DataDir   string `toml:"data_dir"`
	LogLevel  string `toml:"log_level"`  // debug, info, warn, error
	LogFormat string `toml:"log_format"` // text or json
	// Debugging enables the HTTP settings pages and forms, which show
	// secrets. Off by default.
	Debugging bool `toml:"debugging"`
	// RateLimit is the minimum distance between pushes to one device and
	// priority; 0 disables the throttle. Default 5 s.
	RateLimit Duration `toml:"rate_limit"`
	// RateLimitPerToken bounds the pushes to one device (an app and a
	// device token) per rate_limit window from one source (an XMPP
	// server, an HTTP client's address), whatever nodes they come
	// through: registration is open, and a device registered under many
	// nodes would otherwise get a push per node. Default
	// appserver.DefaultRateLimitPerToken; 0 turns it off.
	RateLimitPerToken *int `toml:"rate_limit_per_token"`
	// PushTimeout bounds one push end to end, retries included.
	PushTimeout Duration `toml:"push_timeout"`
	// PprofListen, when set, serves net/http/pprof on that address: a
	// loopback one unless PprofAllowRemote, since profiles show memory
	// contents and let anyone load the server.
	PprofListen      string `toml:"pprof_listen"`
	PprofAllowRemote bool   `toml:"pprof_allow_remote"`
	// MetricsListen, when set, serves /metrics on its own listener instead
	// of the HTTP API's, so the public port does not show it.
	MetricsListen string `toml:"metrics_listen"`
	// MaxRegistrationsPerDomain caps the registrations one XMPP domain can
	// hold (made over XMPP commands), so one domain cannot fill the
	// registry; 0 (the default) means no cap.
	MaxRegistrationsPerDomain int `toml:"max_registrations_per_domain"`
	// AccountRegisterLimit bounds the registrations and unregistrations
	// of one XMPP account a minute. Default
	// appserver.DefaultAccountRegisterLimit;
	// 0 turns it off.
	AccountRegisterLimit *int `toml:"account_register_limit"`
	// TokenBlock is how long a device token a push service declared dead
	// is refused to tokenless and publish-options pushes. Default 7 days.
	TokenBlock Duration `toml:"token_block"`
	// MaxBlockedTokens caps the rows of that block list, so that a
	// stranger naming made-up tokens cannot grow it without end; the
	// blocks ending soonest give way. Default
	// appserver.DefaultMaxBlockedTokens; 0 means no cap.
	MaxBlockedTokens *int `toml:"max_blocked_tokens"`
	// OutageGrace is how long, once the registry cannot be read (a
	// database away), the registrations the push path had cached still
	// serve pushes; 0 turns that off, and such pushes fail. Default ten
	// minutes.
	OutageGrace Duration `toml:"outage_grace"`
	// Redelivery is how long a push the push service did not take, for
	// a reason that may pass (its outage, a 5xx or 429, a broken
	// connection), is sent again, counted from the device's latest such
	// failure: XMPP servers send each push once. 0 turns it off. Default
	// ten minutes.
	Redelivery Duration `toml:"redelivery"`
	// RegistrationCache is how many registrations the push path keeps in
	// memory (about a third of a kilobyte each), so a push to one of them reads
	// no database; 0 turns the cache off. Default 50,000.
	RegistrationCache int `toml:"registration_cache"`
	// StrictRegistration makes a new token or type for a registered node,
	// and an unregistration, need the node's secret (or, for registrations
	// made over XMPP, the same account). Off by default: mod_push_appserver
	// clients send no secret, and a new token then gets a new secret.
	StrictRegistration bool `toml:"strict_registration"`
	// ShutdownDelay is how long a stop (SIGTERM, SIGINT) first waits,
	// serving everything while the ready page answers 503, before the
	// server drains and stops: Kubernetes takes a stopping pod out of
	// its Service only as it sends the signal, and the requests routed
	// there meanwhile would meet closed listeners. 0, the default,
	// drains at once, as a server under systemd or behind a load
	// balancer that is told first should.
	ShutdownDelay Duration `toml:"shutdown_delay"`

	HTTP       HTTP            `toml:"http"`
	Database   Database        `toml:"database"`
	Components []Component     `toml:"component"`
	Apps       map[string]*App `toml:"apps"`

	// Obsolete lists accepted options that no longer do anything, for a
	// warning at start.
	Obsolete []string `toml:"-"`
	// Warnings are settings that load but probably do not do what was
	// meant (a seed option overriding the file's app setting).
	Warnings []string `toml:"-"`
	// seedApps are the apps mod_push_appserver's options created, with
	// those options, to name them when such an app lacks settings.
	seedApps map[string][]string

	seed seedOptions
	// Whether a zero value was written out, where zero means "off".
	rateLimitExplicit  bool
	debuggingExplicit  bool
	httpListenExplicit bool
	cacheExplicit      bool
	graceExplicit      bool
	redeliveryExplicit bool
	proxiesExplicit    bool
}

// OutageGraceOption is OutageGrace as appserver.Options takes it, where
// 0 means the default and a negative value none.
func (c *Config) OutageGraceOption() time.Duration {
	if c.OutageGrace == 0 {
		return -1
	}
	return c.OutageGrace.D()
}

// maxSensibleShutdownDelay is the longest shutdown_delay that draws no
// warning: endpoints are updated within seconds.
const maxSensibleShutdownDelay = time.Minute

// maxSensibleRedelivery is the longest redelivery that draws no
// warning.
const maxSensibleRedelivery = time.Hour

// RedeliveryOption is Redelivery as appserver.Options takes it, where 0
// means the default and a negative value none.
func (c *Config) RedeliveryOption() time.Duration {
	if c.Redelivery == 0 {
		return -1
	}
	return c.Redelivery.D()
}

// CacheSize is RegistrationCache as appserver.Options.CacheSize takes it,
// where 0 means the default and a negative value no cache.
func (c *Config) CacheSize() int {
	if c.RegistrationCache == 0 {
		return -1
	}
	return c.RegistrationCache
}

// HTTP configures the HTTP API listeners.
type HTTP struct {
	Listen      string `toml:"listen"`     // default 127.0.0.1:5280; "" disables
	TLSListen   string `toml:"tls_listen"` // e.g. ":5281"
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`
	Metrics     *bool  `toml:"metrics"` // serve /metrics; default true
	// RegisterLimit bounds registrations and unregistrations a minute per
	// client address (an IPv6 client's /64). Default
	// httpapi.DefaultRegisterLimit; 0 turns it off.
	RegisterLimit *int `toml:"register_limit"`
	// TrustedProxies are addresses or CIDR prefixes of reverse proxies,
	// whose X-Forwarded-For names the client (for RegisterLimit, and as
	// a push's source for RateLimitPerToken). Default
	// httpapi.DefaultTrustedProxies: loopback and the private ranges.
	TrustedProxies []string `toml:"trusted_proxies"`
	// MaxConnectionsPerClient bounds the connections one client address
	// (an IPv6 client's /64) holds at once on the HTTP listeners;
	// loopback and TrustedProxies are not bounded. Default
	// httpapi.DefaultMaxConnectionsPerClient; 0 turns it off.
	MaxConnectionsPerClient *int `toml:"max_connections_per_client"`
}

// Proxies returns TrustedProxies as prefixes, an address as a prefix of
// its full length.
func (h HTTP) Proxies() ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, s := range h.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.Addr().Is4In6() {
				// Written as a dual-stack socket shows IPv4 peers
				// (::ffff:192.0.2.0/120); they are compared as IPv4.
				if p.Bits() < 96 {
					return nil, fmt.Errorf("%q: an IPv4-mapped prefix shorter than /96 also covers IPv6 addresses; write the IPv4 and IPv6 prefixes apart", s)
				}
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			ps = append(ps, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			// The server sees an IPv4 peer of a dual-stack socket as
			// IPv4, so that is how it must be written here.
			a = a.Unmap()
			ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
		} else {
			return nil, fmt.Errorf("want an address or a prefix such as 10.0.0.0/8, got %q", s)
		}
	}
	return ps, nil
}

// Database selects the registry store.
type Database struct {
	Driver string `toml:"driver"` // sqlite (default) or postgres
	Path   string `toml:"path"`   // sqlite: default <data_dir>/registry.db
	// DSN is the PostgreSQL connection string (URL or key=value): a
	// literal, "env:NAME" or "file:/path", as it usually holds a password.
	DSN string `toml:"dsn"`
	// StatementTimeout bounds every PostgreSQL statement. Default 5 s.
	StatementTimeout Duration `toml:"statement_timeout"`
}

// Component is one XEP-0114 connection to an XMPP server.
type Component struct {
	JID     string `toml:"jid"`
	Address string `toml:"address"` // host:port of the server's component listener, default 127.0.0.1:5347
	// Secret is the shared component secret: a literal, "env:NAME" or
	// "file:/path".
	Secret string `toml:"secret"`
	// DefaultApp is the app a v1-register-push command registers into when
	// it names no type.
	DefaultApp string `toml:"default_app"`
	// V1Commands enables mod_push_appserver's v1-register-push and
	// v1-unregister-push commands. Default true.
	V1Commands *bool `toml:"v1_commands"`
	// FCMCommandApp is the app Conversations' register-push-fcm registers
	// into; default "fcm" when that app exists, "" disables the command.
	FCMCommandApp *string `toml:"register_push_fcm_app"`
	// APNSCommandApp likewise for register-push-apns; default "apns".
	APNSCommandApp *string `toml:"register_push_apns_app"`
	// WebPushCommandApp is the app register-push-webpush (web clients,
	// UnifiedPush) registers into; "" (the default) disables the command.
	WebPushCommandApp string `toml:"register_push_webpush_app"`
	// MaxInFlight bounds pushes handled at once on this connection.
	MaxInFlight int `toml:"max_in_flight"`
	// KeepAlive is how long the stream may be quiet before the component
	// pings the XMPP server; three pings, half as long apart, unanswered
	// and the connection is replaced (see component.Options).
	// Default 60 s.
	KeepAlive Duration `toml:"keepalive"`
	// TigaseProviders turns on Tigase's register-device and
	// unregister-device commands (Siskin IM, Snikket iOS): each provider
	// value a client sends ("tigase:messenger:apns:1") names the app it
	// registers into. Empty (the default) leaves them off.
	TigaseProviders map[string]string `toml:"tigase_providers"`
	// TigaseMaxPayloadSize is the max-payload-size register-device
	// answers: how large an encrypted notification the user's server may
	// send. Default 3072, what Siskin asks its server for; at most 3584,
	// which leaves room for what the push carries beside it.
	TigaseMaxPayloadSize int `toml:"tigase_max_payload_size"`
	// Domains, unless empty, are the XMPP domains whose accounts may run
	// the registration commands through this component. The server at
	// the other end vouches for every sender and can claim any, so where
	// one process serves components of servers run by others, give each
	// its own domains. Empty (the default): any domain, as a component
	// on one's own server that users of other servers reach over
	// server-to-server XMPP needs.
	Domains []string `toml:"domains"`
	// Tokenless takes a publish whose node is not registered as a push to
	// that node as a device token (fpush, Monal): of the app named in the
	// publish-options field pushModule, or of TokenlessApp (default:
	// DefaultApp). Off by default: anyone who knows the component JID and
	// a token can then wake the device.
	Tokenless    bool   `toml:"tokenless"`
	TokenlessApp string `toml:"tokenless_app"`
	// PublishOptionsTokens takes publish-options device_id and service
	// (MongooseIM) as a push to that token; PublishOptionsApps maps a
	// service ("apns", "fcm") or "service:mode" to an app, and a service
	// it does not list names the app itself. Off by default.
	PublishOptionsTokens bool              `toml:"publish_options_tokens"`
	PublishOptionsApps   map[string]string `toml:"publish_options_apps"`
}

// App is one push target; registrations name it in their type.
type App struct {
	Kind string `toml:"kind"` // apns, fcm, webpush or log
	// Priority: high, silent, voip or auto (high when the summary carries
	// a message body, silent otherwise).
	Priority string `toml:"priority"`
	// IncludeSummary lets the push payload carry the sender and body the
	// user's server sent; off by default so push services see no content.
	IncludeSummary bool     `toml:"include_summary"`
	TTL            Duration `toml:"ttl"` // 0: the service's default
	// PushDeadline bounds one push's retries; when it runs out the push is
	// answered as temporary (XMPP "wait"). Default 5 s, well under the
	// IQ timeouts of XMPP servers.
	PushDeadline Duration `toml:"push_deadline"`
	Endpoint     string   `toml:"endpoint"` // override the service's URL (tests, proxies)
	CAPath       string   `toml:"ca_path"`  // directory of CA certificates; default system pool

	// APNS
	Topic        string `toml:"topic"`
	Sandbox      *bool  `toml:"sandbox"` // default true, as the seed
	CertFile     string `toml:"cert_file"`
	KeyFile      string `toml:"key_file"`
	PKCS12File   string `toml:"pkcs12_file"`
	KeyPassword  string `toml:"key_password"` // literal, env:NAME or file:/path
	TokenKeyFile string `toml:"token_key_file"`
	KeyID        string `toml:"key_id"`
	TeamID       string `toml:"team_id"`
	// AlertTitle and AlertBody are what an alert (high) push shows when
	// the summary's content is not included; default "New Message" each,
	// as mod_push_appserver's last version sends.
	AlertTitle string `toml:"alert_title"`
	AlertBody  string `toml:"alert_body"`
	// Alert is the earlier name of AlertBody, still accepted.
	Alert          string `toml:"alert"`
	Sound          string `toml:"sound"` // default "default"
	MutableContent *bool  `toml:"mutable_content"`
	// Collapse lets a newer push replace one the service still holds
	// (APNS apns-collapse-id, WebPush Topic); default on for webpush only.
	Collapse *bool `toml:"collapse"`

	// FCM
	ServiceAccountFile string `toml:"service_account_file"`
	ProjectID          string `toml:"project_id"`
	TokenURL           string `toml:"token_url"`
	AndroidPriority    string `toml:"android_priority"` // high (default) or normal
	CollapseKey        string `toml:"collapse_key"`
	NotificationTitle  string `toml:"notification_title"`
	NotificationBody   string `toml:"notification_body"`

	// WebPush
	VAPIDKeyFile string `toml:"vapid_key_file"` // P-256 key; push-appserver vapid-keygen writes one
	VAPIDSubject string `toml:"vapid_subject"`  // mailto: or https: contact for push service operators
	// AllowPrivateEndpoints lets subscription endpoints resolve to
	// loopback, private and link-local addresses: only for a UnifiedPush
	// distributor on your own network, or tests. Off by default.
	AllowPrivateEndpoints bool `toml:"allow_private_endpoints"`
	// EndpointPorts are the ports subscription endpoints may use; default [443].
	EndpointPorts []int `toml:"endpoint_ports"`
	// EndpointHosts, when set, are the only push-service hosts we send to
	// ("fcm.googleapis.com", "*.push.services.mozilla.com").
	EndpointHosts []string `toml:"endpoint_hosts"`
}

// CertificateExpiryWarning is how long before a certificate expires
// check-config and the server's log warn about it.
const CertificateExpiryWarning = 30 * 24 * time.Hour

// Kinds of app.
const (
	KindAPNS    = "apns"
	KindFCM     = "fcm"
	KindLog     = "log"
	KindWebPush = "webpush"
)

// Duration is a time.Duration written as a number of seconds (the seed's
// style) or as a Go duration string ("10s", "1m30s").
type Duration time.Duration

// UnmarshalTOML implements toml.Unmarshaler.
func (d *Duration) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v > int64(math.MaxInt64/time.Second) || v < int64(math.MinInt64/time.Second) {
			return fmt.Errorf("%d seconds is too long", v)
		}
		*d = Duration(time.Duration(v) * time.Second)
	case float64:
		ns := v * float64(time.Second)
		if math.IsNaN(ns) || ns >= math.MaxInt64 || ns <= math.MinInt64 {
			return fmt.Errorf("%v seconds is too long", v)
		}
		*d = Duration(time.Duration(ns))
	case string:
		p, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("not a duration: %q", v)
		}
		*d = Duration(p)
	default:
		return fmt.Errorf("want seconds or a duration string, got %T", v)
	}
	if *d < 0 {
		return errors.New("must not be negative")
	}
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the configuration used when no file is given: HTTP on
// 127.0.0.1:5280, SQLite in ./data, debugging off, and the apps "apns" and
// "fcm" on the log backend so registrations of the seed's types work.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

// Load reads the file at path; an empty path means the defaults. The
// returned error lists every problem, each naming its key.
func Load(path string) (*Config, error) {
	if path == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(string(data), filepath.Dir(path))
}

// Parse reads a configuration from TOML text. Relative file paths in it are
// taken relative to dir.
func Parse(text, dir string) (*Config, error) {
	c := &Config{}
	md, err := toml.Decode(text, c)
	if err != nil {
		return nil, fmt.Errorf("config: %w", redactParseError(err))
	}
	md2, err := toml.Decode(text, &c.seed)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	keys, problems, warnings := optionNames(md)
	// Defined in any case: the decoder takes option names in any case,
	// and an explicit 0 or "" written so is still the operator's "off".
	defined := func(key ...string) bool { return keys[strings.Join(key, ".")] }
	c.rateLimitExplicit = defined("rate_limit")
	c.debuggingExplicit = defined("debugging")
	c.httpListenExplicit = defined("http", "listen")
	c.cacheExplicit = defined("registration_cache")
	c.proxiesExplicit = defined("http", "trusted_proxies")
	c.graceExplicit = defined("outage_grace")
	c.redeliveryExplicit = defined("redelivery")
	c.Warnings = append(c.Warnings, warnings...)
	// A key is unknown when neither our options nor the seed's took it.
	seedMissed := map[string]bool{}
	for _, k := range md2.Undecoded() {
		seedMissed[k.String()] = true
	}
	for _, k := range md.Undecoded() {
		if seedMissed[k.String()] {
			problems = append(problems, fmt.Errorf("%s: unknown option", k.String()))
		}
	}
	problems = append(problems, c.seed.apply(c)...)
	c.applyDefaults()
	c.resolvePaths(dir)
	problems = append(problems, c.validate()...)
	if err := errors.Join(problems...); err != nil {
		return c, err
	}
	return c, nil
}

// optionNames reads the option names md holds, which the TOML decoder
// takes in any case: keys has each one in lower case (operator-chosen
// names, such as an app's, as written). An option name in another case
// works, with a warning; one option written twice in two cases is a
// problem, since the decoder takes either, in map order. A non-table
// where a table belongs, which the decoder takes as nothing, is a
// problem too.
func optionNames(md toml.MetaData) (keys map[string]bool, problems []error, warnings []string) {
	keys = map[string]bool{}
	written := map[string]string{}
	for _, k := range md.Keys() {
		norm := make([]string, len(k))
		for i, seg := range k {
			norm[i] = seg
			// Names chosen by the operator: an app's, a Tigase
			// provider's, a publish-options service's.
			// (The table holding them may itself be spelled in any case.)
			if i == 1 && strings.EqualFold(k[0], "apps") || i > 0 && (strings.EqualFold(k[i-1], "tigase_providers") || strings.EqualFold(k[i-1], "publish_options_apps")) {
				continue
			}
			norm[i] = strings.ToLower(seg)
		}
		key := strings.Join(norm, ".")
		// Compared segment by segment: k.String() quotes the names
		// TOML must quote ("tigase:messenger:apns:1"), which key does not.
		raw := strings.Join(k, ".")
		switch first, ok := written[key]; {
		case ok && first != k.String():
			problems = append(problems, fmt.Errorf("%s: written again as %s; the two cases name one option", first, k.String()))
		case !ok && key != raw:
			warnings = append(warnings, fmt.Sprintf("%s: option names are lower case: write %s", k.String(), toml.Key(norm).String()))
		}
		written[key], keys[key] = k.String(), true
		switch key {
		case "apps", "component.tigase_providers", "component.publish_options_apps":
			if t := md.Type(k...); t != "Hash" {
				problems = append(problems, fmt.Errorf("%s: want a table, got %s", k.String(), strings.ToLower(t)))
			}
		}
	}
	return keys, problems, warnings
}

// redactParseError keeps a value that may be a secret (one written
// without quotes) out of a TOML syntax error.
func redactParseError(err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	k := pe.LastKey
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		k = k[i+1:]
	}
	switch k {
	case "secret", "dsn", "key_password":
		return fmt.Errorf("toml: line %d (last key %q): not a valid value (a string needs quotes)", pe.Position.Line, pe.LastKey)
	}
	return err
}

func (c *Config) applyDefaults() {
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
	}
	if c.RateLimit == 0 && !c.rateLimitExplicit {
		c.RateLimit = Duration(5 * time.Second)
	}
	if c.RegistrationCache == 0 && !c.cacheExplicit {
		c.RegistrationCache = appserver.DefaultCacheSize
	}
	if c.OutageGrace == 0 && !c.graceExplicit {
		c.OutageGrace = Duration(appserver.DefaultOutageGrace)
	}
	if c.Redelivery == 0 && !c.redeliveryExplicit {
		c.Redelivery = Duration(appserver.DefaultRedelivery)
	}
	if c.PushTimeout == 0 {
		c.PushTimeout = Duration(appserver.DefaultPushTimeout)
	}
	if c.TokenBlock == 0 {
		c.TokenBlock = Duration(7 * 24 * time.Hour)
	}
	if c.HTTP.Listen == "" && !c.httpListenExplicit {
		c.HTTP.Listen = "127.0.0.1:5280"
	}
	if c.HTTP.Metrics == nil {
		t := true
		c.HTTP.Metrics = &t
	}
	if c.RateLimitPerToken == nil {
		n := appserver.DefaultRateLimitPerToken
		c.RateLimitPerToken = &n
	}
	if c.MaxBlockedTokens == nil {
		n := appserver.DefaultMaxBlockedTokens
		c.MaxBlockedTokens = &n
	}
	if c.AccountRegisterLimit == nil {
		n := appserver.DefaultAccountRegisterLimit
		c.AccountRegisterLimit = &n
	}
	if c.HTTP.RegisterLimit == nil {
		n := httpapi.DefaultRegisterLimit
		c.HTTP.RegisterLimit = &n
	}
	if c.HTTP.MaxConnectionsPerClient == nil {
		n := httpapi.DefaultMaxConnectionsPerClient
		c.HTTP.MaxConnectionsPerClient = &n
	}
	if c.HTTP.TrustedProxies == nil && !c.proxiesExplicit {
		for _, p := range httpapi.DefaultTrustedProxies() {
			c.HTTP.TrustedProxies = append(c.HTTP.TrustedProxies, p.String())
		}
	}
	if c.Database.Driver == "" {
		c.Database.Driver = "sqlite"
	}
	if c.Database.Path == "" {
		c.Database.Path = filepath.Join(c.DataDir, "registry.db")
	}
	if c.Database.StatementTimeout == 0 {
		c.Database.StatementTimeout = Duration(5 * time.Second)
	}
	if len(c.Apps) == 0 {
		c.Apps = map[string]*App{
			"apns": {Kind: KindLog},
			"fcm":  {Kind: KindLog},
		}
	}
	for _, a := range c.Apps {
		a.applyDefaults()
	}
	for i := range c.Components {
		cp := &c.Components[i]
		if cp.Address == "" {
			cp.Address = "127.0.0.1:5347"
		}
		if cp.V1Commands == nil {
			t := true
			cp.V1Commands = &t
		}
		if cp.FCMCommandApp == nil {
			s := ""
			if _, ok := c.Apps["fcm"]; ok {
				s = "fcm"
			}
			cp.FCMCommandApp = &s
		}
		if cp.APNSCommandApp == nil {
			s := ""
			if _, ok := c.Apps["apns"]; ok {
				s = "apns"
			}
			cp.APNSCommandApp = &s
		}
		if cp.MaxInFlight == 0 {
			cp.MaxInFlight = component.DefaultMaxInFlight
		}
		if cp.KeepAlive == 0 {
			cp.KeepAlive = Duration(component.DefaultKeepAlive)
		}
		if cp.TigaseMaxPayloadSize == 0 {
			cp.TigaseMaxPayloadSize = 3072
		}
		// Up to 4096 was once taken; a configuration written then still
		// loads, and answers what fits.
		if n := cp.TigaseMaxPayloadSize; n > maxTigasePayloadSize && n <= 4096 {
			c.Warnings = append(c.Warnings, fmt.Sprintf("component %q: tigase_max_payload_size %d leaves no room for the node, account and alert beside a Tigase server's encrypted notification, so its long messages would not reach APNS or FCM; %d is answered", cp.JID, n, maxTigasePayloadSize))
			cp.TigaseMaxPayloadSize = maxTigasePayloadSize
		}
		if cp.TokenlessApp == "" {
			cp.TokenlessApp = cp.DefaultApp
		}
	}
}

func (a *App) applyDefaults() {
	if a.Kind == "" {
		a.Kind = KindLog
	}
	if a.Priority == "" {
		// auto for every kind, as the README says: an FCM app's
		// notification_title goes only on pushes the user's server
		// marked important, not on every receipt and chat state.
		a.Priority = "auto"
	}
	if a.PushDeadline == 0 {
		a.PushDeadline = Duration(push.DefaultPushDeadline)
	}
	if a.Sandbox == nil {
		t := true
		a.Sandbox = &t
	}
	if a.MutableContent == nil {
		t := true
		a.MutableContent = &t
	}
	if a.AlertBody == "" {
		a.AlertBody = a.Alert
	}
	if a.AlertBody == "" {
		a.AlertBody = "New Message"
	}
	if a.AlertTitle == "" {
		a.AlertTitle = "New Message"
	}
	if a.Sound == "" {
		a.Sound = "default"
	}
	if a.AndroidPriority == "" {
		a.AndroidPriority = fcm.DefaultPriority
	}
	if a.Collapse == nil {
		c := a.Kind == KindWebPush
		a.Collapse = &c
	}
	if len(a.EndpointPorts) == 0 {
		a.EndpointPorts = []int{443}
	}
}

func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && dir != "" && dir != "." {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, a := range c.Apps {
		for _, p := range []*string{&a.CAPath, &a.CertFile, &a.KeyFile, &a.PKCS12File, &a.TokenKeyFile, &a.ServiceAccountFile, &a.VAPIDKeyFile} {
			abs(p)
		}
	}
	abs(&c.HTTP.TLSCertFile)
	abs(&c.HTTP.TLSKeyFile)
}

// validate checks everything it can without touching the network.
func (c *Config) validate() []error {
	var ps []error
	bad := func(key, format string, args ...any) {
		ps = append(ps, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "want debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", "want text or json, got %q", c.LogFormat)
	}
	checkAddr := func(key, addr string) {
		if addr == "" {
			return
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			bad(key, "want host:port, got %q", addr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad(key, "bad port in %q", addr)
		}
	}
	checkAddr("http.listen", c.HTTP.Listen)
	checkAddr("http.tls_listen", c.HTTP.TLSListen)
	checkAddr("pprof_listen", c.PprofListen)
	if err := CheckPprofListen(c.PprofListen, c.PprofAllowRemote); err != nil {
		bad("pprof_listen", "%v", err)
	}
	checkAddr("metrics_listen", c.MetricsListen)
	// Each listener binds a socket of its own: two on one address would
	// pass here and fail serve at start with "address already in use",
	// which reads as if another process held the port.
	var seenAddr [][2]string
	for _, l := range [][2]string{{"http.listen", c.HTTP.Listen}, {"http.tls_listen", c.HTTP.TLSListen}, {"metrics_listen", c.MetricsListen}, {"pprof_listen", c.PprofListen}} {
		if l[1] == "" {
			continue
		}
		for _, o := range seenAddr {
			if sameSocket(o[1], l[1]) {
				bad(l[0], "%q is %s's address too: give each listener its own", l[1], o[0])
				break
			}
		}
		seenAddr = append(seenAddr, l)
	}
	if *c.MaxBlockedTokens < 0 {
		bad("max_blocked_tokens", "must not be negative (0 means no cap)")
	}
	if *c.AccountRegisterLimit < 0 {
		bad("account_register_limit", "must not be negative (0 turns the limit off)")
	}
	if *c.RateLimitPerToken < 0 {
		bad("rate_limit_per_token", "must not be negative (0 turns the limit off)")
	}
	if c.MaxRegistrationsPerDomain < 0 {
		bad("max_registrations_per_domain", "must not be negative (0 means no cap)")
	}
	if *c.HTTP.RegisterLimit < 0 {
		bad("http.register_limit", "must not be negative (0 turns the limit off)")
	}
	if *c.HTTP.MaxConnectionsPerClient < 0 {
		bad("http.max_connections_per_client", "must not be negative (0 means no cap)")
	}
	if ps, err := c.HTTP.Proxies(); err != nil {
		bad("http.trusted_proxies", "%v", err)
	} else if *c.HTTP.RegisterLimit > 0 || *c.RateLimitPerToken > 0 && c.RateLimit > 0 {
		// Both count HTTP clients by the address X-Forwarded-For names.
		for _, p := range ps {
			if p.Bits() == 0 {
				c.Warnings = append(c.Warnings, fmt.Sprintf("http.trusted_proxies: %s trusts every address, so any client can name itself in X-Forwarded-For, and http.register_limit and rate_limit_per_token count each name it picks apart; list your proxies' addresses", p))
			}
		}
	}
	if c.RegistrationCache < 0 {
		bad("registration_cache", "must not be negative (0 turns the cache off)")
	}
	if c.PushTimeout.D() < minPushTime {
		// Nothing answers that fast: every push, its redeliveries
		// included, would run out of time and be answered wait.
		bad("push_timeout", "want at least %s (0 keeps the default, %s), got %s: no push service answers within it", minPushTime, appserver.DefaultPushTimeout, c.PushTimeout.D())
	}
	if c.RateLimit > 0 && c.RateLimit >= c.PushTimeout {
		// The throttle holds a burst's last push for the next window,
		// within push_timeout: one that ends first drops that push.
		bad("rate_limit", "%s is not below push_timeout (%s): the last push of a burst, held for the next window, would be dropped; lower rate_limit or raise push_timeout", c.RateLimit.D(), c.PushTimeout.D())
	}
	if c.TokenBlock.D() > maxTokenBlock {
		bad("token_block", "%s is longer than 200 years, past what the registry can store; for a block that never ends, 200 years (\"1752000h\") does", c.TokenBlock.D())
	}
	if c.Database.Driver == "sqlite" && c.Database.DSN != "" {
		c.Warnings = append(c.Warnings, "database.dsn: set, but database.driver is sqlite, so the registry is "+c.Database.Path+" and the dsn is not used: set driver = \"postgres\" (or remove dsn)")
	}
	if c.ShutdownDelay.D() > maxSensibleShutdownDelay {
		c.Warnings = append(c.Warnings, fmt.Sprintf("shutdown_delay: %s holds every stop that long before the server drains (up to 20 s more); an orchestrator kills it at its grace (Kubernetes' terminationGracePeriodSeconds, 30 s by default)", c.ShutdownDelay.D()))
	}
	if c.Redelivery.D() > maxSensibleRedelivery {
		c.Warnings = append(c.Warnings, fmt.Sprintf("redelivery: %s sends a failed push that late, waking devices for messages long read; an hour at most is usual", c.Redelivery.D()))
	}
	for _, name := range slices.Sorted(maps.Keys(c.Apps)) {
		a := c.Apps[name]
		if a == nil {
			continue
		}
		// The texts every alert carries: long ones leave a push little
		// or no room for the message's sender and body within the 4 KiB
		// a push service takes, and too long, every alert of the app
		// fails while the server looks healthy. A warning: a setting
		// that pushed before must not stop an upgraded server.
		for _, kv := range [][2]string{{"alert_title", a.AlertTitle}, {"alert_body", a.AlertBody}, {"sound", a.Sound},
			{"notification_title", a.NotificationTitle}, {"notification_body", a.NotificationBody}} {
			if len(kv[1]) > maxAlertText {
				c.Warnings = append(c.Warnings, fmt.Sprintf("apps.%s.%s: %d bytes: every push of the app carries it, within the 4 KiB a push service takes, leaving the message little room or none (pushes then fail); keep it under %d", name, kv[0], len(kv[1]), maxAlertText))
			}
		}
		if a.Kind == KindWebPush && localSubject(a.VAPIDSubject) {
			c.Warnings = append(c.Warnings, fmt.Sprintf("apps.%s.vapid_subject: %q names a host nobody outside can reach; Apple's push service refuses such a subject (BadJwtToken), so Safari and iOS subscriptions get no pushes: give an address or a site of yours", name, a.VAPIDSubject))
		}
		if a.Priority == "voip" && (a.Kind == KindFCM || a.Kind == KindWebPush) {
			// A PushKit push is APNS's alone: FCM and WebPush send it
			// as high, but a push of priority voip is never kept for
			// redelivery, so such an app's failed pushes were lost. A
			// configuration that started before still starts.
			c.Warnings = append(c.Warnings, fmt.Sprintf("apps.%s.priority: voip is an APNS push; kind %s takes high, silent or auto, and high is used", name, a.Kind))
			a.Priority = "high"
		}
	}
	if c.HTTP.TLSListen != "" {
		if c.HTTP.TLSCertFile == "" || c.HTTP.TLSKeyFile == "" {
			bad("http.tls_listen", "needs http.tls_cert_file and http.tls_key_file")
		}
		checkFile(&ps, "http.tls_cert_file", c.HTTP.TLSCertFile)
		checkFile(&ps, "http.tls_key_file", c.HTTP.TLSKeyFile)
	}
	switch c.Database.Driver {
	case "sqlite":
	case "postgres":
		if dsn, err := ResolveSecret(c.Database.DSN); err != nil {
			bad("database.dsn", "%v", err)
		} else if dsn == "" {
			bad("database.dsn", "required with driver postgres (a literal, env:NAME or file:/path)")
		}
		if c.Database.StatementTimeout < 0 {
			bad("database.statement_timeout", "must not be negative")
		} else if d := c.Database.StatementTimeout.D(); d < minStatementTimeout {
			// PostgreSQL counts whole milliseconds: under one it
			// was sent as 0, no bound at all; and a bound of a few
			// fails the registry's statements at any load.
			bad("database.statement_timeout", "want at least %s (0 keeps the default, 5s), got %s", minStatementTimeout, d)
		}
	default:
		bad("database.driver", "want sqlite or postgres, got %q", c.Database.Driver)
	}

	names := make([]string, 0, len(c.Apps))
	for n := range c.Apps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, p := range c.Apps[n].validate("apps." + n) {
			if keys := c.seedApps[n]; len(keys) > 0 {
				p = fmt.Errorf("%w (app %s of kind %s exists only because %s is set: configure [apps.%s] fully, or remove %s)",
					p, n, c.Apps[n].Kind, strings.Join(keys, ", "), n, strings.Join(keys, ", "))
			}
			ps = append(ps, p)
		}
	}

	seen := map[string]bool{}
	for i, cp := range c.Components {
		key := fmt.Sprintf("component[%d]", i)
		if cp.JID == "" {
			bad(key+".jid", "required")
		} else if j, err := jid.Parse(cp.JID); err != nil || strings.ContainsAny(cp.JID, "@/ ") {
			bad(key+".jid", "want a bare domain JID such as push.example.org, got %q", cp.JID)
		} else if seen[jidKey(cp.JID)] {
			bad(key+".jid", "%q configured twice", cp.JID)
		} else if j.Domainpart() != strings.ToLower(cp.JID) && strings.Contains(strings.ToLower(cp.JID), "xn--") {
			// The handshake introduces the component by its Unicode
			// name, which an XMPP server configured with the A-label
			// knows as no component of its own (host-unknown).
			bad(key+".jid", "%q is an internationalised name in its xn-- form; write it as %q, here and in the XMPP server's configuration", cp.JID, j.Domainpart())
		} else {
			// As the XMPP server writes it in what it routes to us, and
			// checks the from of what we send (Prosody: invalid-from).
			c.Components[i].JID = j.Domainpart()
		}
		seen[jidKey(cp.JID)] = true
		checkAddr(key+".address", cp.Address)
		if s, err := ResolveSecret(cp.Secret); err != nil {
			ps = append(ps, &ComponentSecretError{fmt.Errorf("%s.secret: %v", key, err)})
		} else if s == "" {
			bad(key+".secret", "required (a literal, env:NAME or file:/path)")
		}
		for k, app := range map[string]string{"default_app": cp.DefaultApp, "register_push_fcm_app": *cp.FCMCommandApp, "register_push_apns_app": *cp.APNSCommandApp, "register_push_webpush_app": cp.WebPushCommandApp} {
			if app != "" && c.Apps[app] == nil {
				bad(key+"."+k, "no app named %q", app)
			}
		}
		for j, d := range cp.Domains {
			// As the commands see a sender's domain: jid's normal form.
			if dj, err := jid.Parse(d); err != nil || dj.Localpart() != "" || dj.Resourcepart() != "" {
				bad(key+".domains", "want XMPP domains such as example.org, got %q", d)
			} else {
				c.Components[i].Domains[j] = dj.Domainpart()
			}
		}
		if cp.MaxInFlight < 1 || cp.MaxInFlight > maxMaxInFlight {
			bad(key+".max_in_flight", "want 1 to %d, got %d", maxMaxInFlight, cp.MaxInFlight)
		}
		if time.Duration(cp.KeepAlive) < time.Second {
			bad(key+".keepalive", "must be at least 1s")
		}
		for _, provider := range slices.Sorted(maps.Keys(cp.TigaseProviders)) {
			if app := cp.TigaseProviders[provider]; c.Apps[app] == nil {
				bad(key+".tigase_providers", "provider %q: no app named %q", provider, app)
			}
		}
		if cp.Tokenless && cp.TokenlessApp != "" && c.Apps[cp.TokenlessApp] == nil {
			bad(key+".tokenless_app", "no app named %q", cp.TokenlessApp)
		}
		for _, service := range slices.Sorted(maps.Keys(cp.PublishOptionsApps)) {
			if app := cp.PublishOptionsApps[service]; c.Apps[app] == nil {
				bad(key+".publish_options_apps", "service %q: no app named %q", service, app)
			}
		}
		if cp.TigaseMaxPayloadSize < 256 || cp.TigaseMaxPayloadSize > 4096 {
			bad(key+".tigase_max_payload_size", "want 256 to 4096 bytes (APNS and FCM take at most 4 KiB; %d is answered at most, for the node, account and alert around the encrypted notification)", maxTigasePayloadSize)
		}
	}
	return ps
}

// maxTigasePayloadSize bounds tigase_max_payload_size. A Tigase server
// sends a device that enabled push with that max-size a base64
// ciphertext of up to about max-size bytes, and the push around it
// carries more of ours: the node, the account, and for APNS the alert,
// some 250 bytes with a long account. At 4,096 every long message's
// notification was larger than APNS and FCM take, and was answered
// modify/not-acceptable; this bound leaves about 500 bytes.
const maxTigasePayloadSize = 3584

// minStatementTimeout is the shortest database.statement_timeout.
const minStatementTimeout = 100 * time.Millisecond

// minPushTime is the shortest push_timeout and push_deadline: APNS and
// FCM answer in some tens of milliseconds, a new connection's handshake
// takes longer, and a push that ran out of time is answered wait, so a
// typo such as "15ms" for "15s" would fail every push.
const minPushTime = time.Second

// maxAlertText is the longest alert or notification text of an app
// (alert_title, alert_body, sound, notification_title,
// notification_body) that check-config does not warn of.
const maxAlertText = 1024

// maxMaxInFlight bounds max_in_flight: the connection sizes its places
// at a few times it, which must not overflow.
const maxMaxInFlight = 1 << 20

// maxTokenBlock bounds token_block: now plus it must stay a time the
// registries store (SQLite keeps UnixNano, which ends in 2262).
const maxTokenBlock = 200 * 365 * 24 * time.Hour

// jidKey is a component JID as the XMPP server compares it.
func jidKey(s string) string {
	if j, err := jid.Parse(s); err == nil {
		return j.Domainpart()
	}
	return s
}

// ComponentSecretError is a component secret that could not be read (an
// env: variable not set, a file: not readable). Only serve needs the
// secret: the commands that work on the registry alone (backup, restore,
// registrations, import), run from an operator's shell without the
// service's environment, go on (OnlyComponentSecrets).
type ComponentSecretError struct{ err error }

func (e *ComponentSecretError) Error() string { return e.err.Error() }
func (e *ComponentSecretError) Unwrap() error { return e.err }

// OnlyComponentSecrets reports whether every problem in err, as Load
// returns it, is a ComponentSecretError.
func OnlyComponentSecrets(err error) bool {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		if cs := (*ComponentSecretError)(nil); !errors.As(e, &cs) {
			return false
		}
	}
	return len(errs) > 0
}

// localSubject reports whether a VAPID subject's host is one no push
// service's operator could reach: localhost, a name reserved for local or
// test use (RFC 6761, RFC 6762), or a loopback or private address.
func localSubject(sub string) bool {
	var host string
	if rest, ok := strings.CutPrefix(sub, "mailto:"); ok {
		rest, _, _ = strings.Cut(rest, "?")
		_, host, _ = strings.Cut(rest, "@")
	} else if u, err := url.Parse(sub); err == nil {
		host = u.Hostname()
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()
	}
	if host == "localhost" {
		return true
	}
	for _, tld := range []string{".localhost", ".local", ".test", ".invalid", ".example", ".internal", ".lan", ".home.arpa"} {
		if strings.HasSuffix(host, tld) {
			return true
		}
	}
	return false
}

func (a *App) validate(key string) []error {
	var ps []error
	bad := func(k, format string, args ...any) {
		ps = append(ps, fmt.Errorf("%s.%s: %s", key, k, fmt.Sprintf(format, args...)))
	}
	switch a.Priority {
	case "high", "silent", "voip", "auto":
	default:
		bad("priority", "want high, silent, voip or auto, got %q", a.Priority)
	}
	if a.CAPath != "" {
		if st, err := os.Stat(a.CAPath); err != nil || !st.IsDir() {
			bad("ca_path", "not a directory: %s", a.CAPath)
		}
	}
	if d := a.PushDeadline.D(); d < minPushTime {
		// As push_timeout: a deadline shorter than a push service's
		// answer fails every push of the app.
		bad("push_deadline", "want at least %s (0 keeps the default, %s), got %s: no push service answers within it", minPushTime, push.DefaultPushDeadline, d)
	}
	if d := a.TTL.D(); d < 0 || d > 0 && d < time.Second {
		// Push services count whole seconds: a shorter one goes out
		// as 0, "deliver now or drop", which loses every push to a
		// device that is away for a moment.
		bad("ttl", "want 0 (the service's default) or at least a second, got %s", d)
	}
	switch a.Kind {
	case KindLog:
		// A push service's settings on a log app (kind left out, or
		// left "log" from the installed file): every push would be
		// answered success and never sent.
		for _, kv := range [][2]string{{"topic", a.Topic}, {"cert_file", a.CertFile}, {"key_file", a.KeyFile}, {"pkcs12_file", a.PKCS12File},
			{"token_key_file", a.TokenKeyFile}, {"service_account_file", a.ServiceAccountFile}, {"vapid_key_file", a.VAPIDKeyFile}} {
			if kv[1] != "" {
				bad("kind", "%q only logs pushes and sends none, but %s is set: set kind to apns, fcm or webpush", a.Kind, kv[0])
				break
			}
		}
	case KindAPNS:
		if a.Topic == "" {
			bad("topic", "required for kind apns (the app's bundle id)")
		}
		cert := a.CertFile != "" || a.KeyFile != "" || a.PKCS12File != ""
		token := a.TokenKeyFile != "" || a.KeyID != "" || a.TeamID != ""
		switch {
		case cert && token:
			bad("token_key_file", "use either a certificate or a token key, not both")
		case a.PKCS12File != "":
			checkFile(&ps, key+".pkcs12_file", a.PKCS12File)
			if a.CertFile != "" || a.KeyFile != "" {
				bad("pkcs12_file", "use either pkcs12_file or cert_file and key_file")
			}
		case cert:
			if a.CertFile == "" || a.KeyFile == "" {
				bad("cert_file", "cert_file and key_file go together")
			}
			checkFile(&ps, key+".cert_file", a.CertFile)
			checkFile(&ps, key+".key_file", a.KeyFile)
		case token:
			if a.TokenKeyFile == "" || a.KeyID == "" || a.TeamID == "" {
				bad("token_key_file", "token auth needs token_key_file, key_id and team_id")
			}
			checkFile(&ps, key+".token_key_file", a.TokenKeyFile)
		default:
			bad("cert_file", "kind apns needs credentials: cert_file and key_file, pkcs12_file, or token_key_file with key_id and team_id")
		}
		if _, err := ResolveSecret(a.KeyPassword); err != nil {
			bad("key_password", "%v", err)
		}
	case KindFCM:
		if a.ServiceAccountFile == "" {
			bad("service_account_file", "required for kind fcm (a Google service-account JSON key)")
		} else {
			checkFile(&ps, key+".service_account_file", a.ServiceAccountFile)
		}
		switch a.AndroidPriority {
		case "high", "normal":
		default:
			bad("android_priority", "want high or normal, got %q", a.AndroidPriority)
		}
		if a.TTL.D() > 28*24*time.Hour {
			bad("ttl", "FCM allows at most 4 weeks")
		}
	case KindWebPush:
		if a.VAPIDKeyFile == "" {
			bad("vapid_key_file", "required for kind webpush (push-appserver vapid-keygen -out FILE writes one)")
		} else {
			checkFile(&ps, key+".vapid_key_file", a.VAPIDKeyFile)
		}
		if !strings.HasPrefix(a.VAPIDSubject, "mailto:") && !strings.HasPrefix(a.VAPIDSubject, "https://") {
			bad("vapid_subject", "required for kind webpush: a mailto: or https: URI push services can reach you at, got %q", a.VAPIDSubject)
		}
		if a.Endpoint != "" {
			bad("endpoint", "not used by kind webpush: each subscription names its endpoint")
		}
		for _, p := range a.EndpointPorts {
			if p < 1 || p > 65535 {
				bad("endpoint_ports", "bad port %d", p)
			}
		}
		for _, h := range a.EndpointHosts {
			name := strings.TrimPrefix(h, "*.")
			if name == "" || strings.ContainsAny(name, "/:@ *") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
				bad("endpoint_hosts", "want host names such as fcm.googleapis.com or *.example.org (no trailing dot; * only as a leading *.), got %q", h)
			}
		}
		if a.TTL.D() > 28*24*time.Hour {
			bad("ttl", "push services keep messages at most 4 weeks")
		}
	default:
		bad("kind", "want apns, fcm, webpush or log, got %q", a.Kind)
	}
	return ps
}

func checkFile(ps *[]error, key, path string) {
	if path == "" {
		return
	}
	// A regular file only: reading a FIFO (or a device) blocks until
	// someone writes, and a reload that waits for it holds the server's
	// signal loop (no stop, no upgrade) and its metrics.
	if st, err := os.Stat(path); err != nil {
		*ps = append(*ps, fmt.Errorf("%s: %w", key, err))
	} else if !st.Mode().IsRegular() {
		*ps = append(*ps, fmt.Errorf("%s: %s is not a regular file (reading a pipe or device would wait for a writer, and hold the start or a reload): name a regular file", key, path))
	}
}

// CheckPprofListen refuses an address for net/http/pprof that is not on
// loopback ("localhost", 127.0.0.0/8, ::1) unless allowRemote: profiles
// show memory contents (secrets included) and cost CPU.
func CheckPprofListen(addr string, allowRemote bool) error {
	if addr == "" || allowRemote {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil // reported as a malformed address
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: pprof shows the server's memory, secrets included; listen on 127.0.0.1, or set pprof_allow_remote = true", addr)
}

// ResolveSecret returns the secret a value stands for: "env:NAME" reads
// the environment variable NAME, "file:/path" the file's first line, and
// anything else is the secret itself. Secrets in files or the environment
// keep them out of the config file and of the process list.
func ResolveSecret(v string) (string, error) {
	const maxSecretFile = 64 << 10
	switch {
	case strings.HasPrefix(v, "env:"):
		name := strings.TrimPrefix(v, "env:")
		s, ok := os.LookupEnv(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		return s, nil
	case strings.HasPrefix(v, "file:"):
		// O_NONBLOCK: opening a FIFO waits for a writer otherwise, and
		// with it the start or the reload's signal loop. Only a regular
		// file is read.
		f, err := os.OpenFile(strings.TrimPrefix(v, "file:"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return "", fmt.Errorf("reading secret: %w", err)
		}
		defer f.Close()
		if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
			return "", fmt.Errorf("reading secret: %s is not a regular file (reading a pipe or device would wait for a writer, and hold the start or a reload): name a regular file, or use env:NAME", f.Name())
		}
		// Only the first line counts: read no more than a secret can be,
		// whatever the path names (a huge file, /dev/zero).
		b, err := io.ReadAll(io.LimitReader(f, maxSecretFile))
		if err != nil {
			return "", fmt.Errorf("reading secret: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSpace(line), nil
	}
	return v, nil
}

// sameSocket reports whether listening on a and on b would collide: the
// same port, and the same address however written ("[::1]", "[0::1]"),
// or a wildcard covering the other (":5280" and "[::]:5280" take IPv4 too,
// "0.0.0.0:5280" every IPv4 address).
func sameSocket(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	na, err1 := strconv.Atoi(pa)
	nb, err2 := strconv.Atoi(pb)
	if err1 != nil || err2 != nil || na != nb || na == 0 {
		// Port 0 is a port of the kernel's choosing, one apiece.
		return a == b
	}
	ipa, erra := netip.ParseAddr(loopbackName(ha))
	ipb, errb := netip.ParseAddr(loopbackName(hb))
	dual := func(h string, ip netip.Addr, err error) bool {
		return h == "" || err == nil && ip == netip.IPv6Unspecified()
	}
	if dual(ha, ipa, erra) || dual(hb, ipb, errb) {
		return true
	}
	if erra != nil || errb != nil {
		return strings.EqualFold(ha, hb)
	}
	ipa, ipb = ipa.Unmap(), ipb.Unmap()
	any4 := netip.IPv4Unspecified()
	return ipa == ipb || ipa == any4 && ipb.Is4() || ipb == any4 && ipa.Is4()
}

// loopbackName is host with "localhost" as the address net.Listen binds
// for it, an IPv4 one when the name has one, as it has everywhere. Other
// names stay as they are: judging them would take a look-up of DNS.
func loopbackName(host string) string {
	if strings.EqualFold(host, "localhost") {
		return "127.0.0.1"
	}
	return host
}

package component

import (
	"context"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
)

// Dialects turns on the publishes that push without a registration. Both
// let anyone who knows the component's JID and a device token wake that
// device: that is how these clients work, so they are off by default.
type Dialects struct {
	// Tokenless takes a publish whose node is not a registered node as a
	// push to that node as a raw device token (fpush, which Monal uses):
	// of the app named by the publish-options field pushModule, or of
	// TokenlessApp.
	Tokenless    bool
	TokenlessApp string
	// PublishOptionsTokens takes a publish whose publish-options carry
	// device_id and service (MongooseIM's clients) as a push to that
	// token, through the app PublishOptionsApps names for "service:mode"
	// or "service", or else the app named like the service.
	PublishOptionsTokens bool
	PublishOptionsApps   map[string]string
}

// secretless reports whether publishes without a secret are taken: only
// when a dialect whose clients enable push without one is on.
func (c *Conn) secretless() bool {
	d := c.opts.Dialects
	return len(c.opts.Commands.TigaseProviders) > 0 || d.Tokenless || d.PublishOptionsTokens
}

// push hands a parsed publish, sent by from, to the core the way this
// component's dialects say.
func (c *Conn) push(ctx context.Context, req xep0357.Request, from string) error {
	pr := appserver.PushRequest{Node: req.Node, Secret: req.Secret, Summary: req.Summary, MarkedHigh: req.MarkedHigh, Encrypted: req.Encrypted, Source: sourceOf(from)}
	d := c.opts.Dialects
	if token := req.Options["device_id"]; d.PublishOptionsTokens && token != "" {
		// MongooseIM copies these from the client's enable form
		// (mod_push_service_mongoosepush: device_id, service, mode,
		// silent, ...); fields we have no use for are ignored.
		service, mode := req.Options["service"], req.Options["mode"]
		app, ok := d.PublishOptionsApps[service+":"+mode]
		if !ok {
			app, ok = d.PublishOptionsApps[service]
		}
		if !ok {
			app = service
		}
		return c.svc.PushToken(ctx, appserver.TokenPush{App: app, Token: token, Request: pr, Silent: req.Options["silent"] == "true"})
	}
	if d.Tokenless {
		pr.Tokenless = true
		pr.TokenApp = d.TokenlessApp
		if m, ok := req.Options["pushModule"]; ok {
			pr.TokenApp = m
		}
	}
	return c.svc.Push(ctx, pr)
}

// sourceOf is the source a publish from the JID from is counted by for
// the per-device limit: its domain, the user's server. The server our
// component connects to routes the publish from it over a stream that
// proved that domain (s2s), or from its own users: a server speaks for
// no other domain's, and so can spend no other server's budget. A JID's
// domain is what follows its localpart's @ and precedes its resource's
// /; the localpart holds neither. The domain is taken in lower case, as
// JIDs compare, so that no server gets a budget per spelling of its
// name; ToLower returns a domain that is in lower case already as it
// is, without an allocation.
func sourceOf(from string) string {
	if i := strings.IndexByte(from, '/'); i >= 0 {
		from = from[:i]
	}
	if i := strings.IndexByte(from, '@'); i >= 0 {
		// A user's account, not the server itself: any client may
		// address the component. The server's users share a budget
		// apart from the server's own publishes (from its bare domain).
		from = from[i:]
	}
	// One domain, one spelling: RFC 7622 §3.2 strips a final dot and
	// takes an A-label as its U-label, as the commands' accounts do.
	// One pass over the name tells both whether it is ASCII and whether
	// it has upper case to lower: a publish's path pays for each.
	from = strings.TrimSuffix(from, ".")
	ascii, upper := true, false
	for i := 0; i < len(from); i++ {
		c := from[i]
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
		upper = upper || 'A' <= c && c <= 'Z'
	}
	if upper || !ascii {
		from = strings.ToLower(from)
	}
	// Most names are ASCII without a hyphen, which these find at once.
	if !ascii || strings.IndexByte(from, '-') >= 0 && strings.Contains(from, "xn--") {
		user, domain := "", from
		if from != "" && from[0] == '@' {
			user, domain = "@", from[1:]
		}
		// A name outside ASCII is mapped as RFC 7622 §3.2.2 (RFC 5895)
		// compares it, as the commands' accounts are: in width,
		// normalisation and dots too, not in case alone. An XMPP server
		// that checks a peer's from by its prepared domain (ejabberd)
		// passes the from on as the peer wrote it, and a peer writing
		// its name in full-width letters, with soft hyphens or in NFD,
		// would otherwise have a budget for each spelling.
		if u, err := idna.Display.ToUnicode(domain); err == nil {
			from = user + strings.TrimSuffix(u, ".")
		}
	}
	return from
}

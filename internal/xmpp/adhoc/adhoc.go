// Package adhoc implements the XEP-0050 commands clients use to register a
// device with the app server through their own XMPP server:
// mod_push_appserver's v1-register-push and v1-unregister-push, the
// register-push-* / unregister-push-* commands of Conversations' app server
// p2, register-push-webpush for web clients and UnifiedPush, and the
// register-device / unregister-device commands of Tigase's push component
// (Siskin IM, Snikket iOS).
package adhoc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

// NS is the ad-hoc commands namespace.
const NS = "http://jabber.org/protocol/commands"

// Command nodes.
const (
	V1Register   = "v1-register-push"
	V1Unregister = "v1-unregister-push"
	RegisterFCM  = "register-push-fcm"
	RegisterAPNS = "register-push-apns"
	// p2's removal of a device's (or one of its channels') registration.
	UnregisterFCM  = "unregister-push-fcm"
	UnregisterAPNS = "unregister-push-apns"
	// Tigase's push component.
	RegisterDevice   = "register-device"
	UnregisterDevice = "unregister-device"
	// RegisterWebPush registers a browser's push subscription (or a
	// UnifiedPush endpoint) for the sender's account. Fields: device-id
	// (a stable id the client keeps per browser or app instance), and
	// either subscription (PushSubscription.toJSON() as JSON text) or
	// endpoint, p256dh and auth. The answer is jid, node and secret, as for
	// register-push-fcm.
	RegisterWebPush = "register-push-webpush"
)

// Features of encrypted and prioritised pushes (Tigase's push extensions),
// listed in register-device's answer; the component advertises them too.
var TigaseFeatures = []string{"tigase:push:encrypt:0", "tigase:push:encrypt:aes-128-gcm", "tigase:push:priority:0"}

// Command is a <command xmlns='http://jabber.org/protocol/commands'/>.
type Command struct {
	XMLName   xml.Name       `xml:"http://jabber.org/protocol/commands command"`
	Node      string         `xml:"node,attr"`
	Action    string         `xml:"action,attr,omitempty"`
	SessionID string         `xml:"sessionid,attr,omitempty"`
	Status    string         `xml:"status,attr,omitempty"`
	Form      *dataform.Form `xml:"jabber:x:data x"`
}

// Registrar is what the commands need from the core.
type Registrar interface {
	Register(ctx context.Context, caller appserver.Caller, typ, node, token string) (registry.Registration, error)
	RegisterDevice(ctx context.Context, typ string, account appserver.Account, deviceID, channel, token string) (registry.Registration, error)
	UnregisterDevice(ctx context.Context, typ string, account appserver.Account, deviceID, channel string) (registry.Registration, error)
	RegisterTigase(ctx context.Context, typ string, account appserver.Account, token string) (registry.Registration, error)
	UnregisterTigase(ctx context.Context, typ string, account appserver.Account, token string) (registry.Registration, error)
	Unregister(ctx context.Context, caller appserver.Caller, typ, node string) (registry.Registration, error)
}

// Options say which commands are offered.
type Options struct {
	// V1 enables v1-register-push and v1-unregister-push.
	V1 bool
	// DefaultApp is the type used when a v1 command leaves it out.
	DefaultApp string
	// FCMApp and APNSApp are the apps register-push-fcm and
	// register-push-apns (and their unregister-push-* twins) register
	// into; "" turns the commands off.
	FCMApp, APNSApp string
	// TigaseProviders maps the provider field of register-device (Siskin
	// sends "tigase:messenger:apns:1") to an app; empty turns
	// register-device and unregister-device off.
	TigaseProviders map[string]string
	// MaxPayloadSize is what register-device reports as max-payload-size:
	// how large an encrypted notification the user's server may send.
	MaxPayloadSize int
	// WebPushApp is the app register-push-webpush registers into; ""
	// turns the command off.
	WebPushApp string
	// Timeout bounds the handling of one command (DefaultTimeout if 0).
	Timeout time.Duration
	// Domains, unless empty, are the XMPP domains whose accounts may
	// run the commands here. The server at the other end of the stream
	// vouches for every sender, and can claim any: where one process
	// serves components of servers run by others, each would otherwise
	// act for the others' accounts. Lower case.
	Domains []string
}

// DefaultTimeout bounds a command's handling unless Options say
// otherwise. The component hands a command no deadline of its own (a
// stop must not cut a registration off half-way), and the registry's
// statements are bounded on its own side, which a database gone silent
// never answers: unbounded, a command would hold its place on the stream,
// and a stop would wait for it, until TCP gave up. A client waits about
// this long for an answer anyway, and a registration that takes longer
// is answered wait.
const DefaultTimeout = 15 * time.Second

// Item is one command for disco#items.
type Item struct{ Node, Name string }

// Commands handles the commands for one component JID.
type Commands struct {
	reg  Registrar
	opts Options
}

// New returns the command handler.
func New(reg Registrar, opts Options) *Commands {
	return &Commands{reg: reg, opts: opts}
}

// Items lists the enabled commands.
func (c *Commands) Items() []Item {
	var items []Item
	if c.opts.V1 {
		items = append(items, Item{V1Register, "Register a device for push notifications"}, Item{V1Unregister, "Unregister a device"})
	}
	if c.opts.FCMApp != "" {
		items = append(items, Item{RegisterFCM, "Register an Android device (FCM)"}, Item{UnregisterFCM, "Unregister an Android device (FCM)"})
	}
	if c.opts.APNSApp != "" {
		items = append(items, Item{RegisterAPNS, "Register an iOS device (APNS)"}, Item{UnregisterAPNS, "Unregister an iOS device (APNS)"})
	}
	if len(c.opts.TigaseProviders) > 0 {
		items = append(items, Item{RegisterDevice, "Register device"}, Item{UnregisterDevice, "Unregister device"})
	}
	if c.opts.WebPushApp != "" {
		items = append(items, Item{RegisterWebPush, "Register a web browser or UnifiedPush endpoint (WebPush)"})
	}
	return items
}

func badRequest(format string, args ...any) error {
	return stanza.Error{Type: stanza.Modify, Condition: stanza.BadRequest, Text: map[string]string{"": fmt.Sprintf(format, args...)}}
}

// Execute runs cmd for the entity from (a full JID), answering as jid (our
// component JID). The error, if any, is a stanza.Error to send back.
func (c *Commands) Execute(ctx context.Context, from, jid string, cmd *Command) (*Command, error) {
	enabled := false
	for _, it := range c.Items() {
		enabled = enabled || it.Node == cmd.Node
	}
	if !enabled {
		return nil, stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound, Text: map[string]string{"": "unknown command"}}
	}
	if cmd.Action == "cancel" {
		// Nothing of a one-step command is kept between steps, so there
		// is nothing to undo; XEP-0050 §3.4 asks for this answer.
		return &Command{Node: cmd.Node, SessionID: cmd.SessionID, Status: "canceled"}, nil
	}
	if cmd.Action != "" && cmd.Action != "execute" && cmd.Action != "complete" {
		return nil, badRequest("action %q is not supported: these commands complete in one step", cmd.Action)
	}
	if cmd.Form == nil {
		return nil, badRequest("the command needs a data form")
	}
	field := func(names ...string) string {
		for _, n := range names {
			if v, _ := cmd.Form.Value(n); v != "" {
				return v
			}
		}
		return ""
	}
	timeout := c.opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Every command is bound to the account that sent it: the user's
	// server vouches for the JID, and registrations belong to it.
	account, err := c.account(from)
	if err != nil {
		return nil, err
	}
	caller := appserver.Caller{Account: account}
	var r registry.Registration
	switch cmd.Node {
	case V1Register:
		typ, node, token := c.typ(field("type")), field("node"), field("token")
		if typ == "" || node == "" || token == "" {
			return nil, badRequest("fields type, node and token are required")
		}
		r, err = c.reg.Register(ctx, caller, typ, node, token)
	case V1Unregister:
		typ, node := c.typ(field("type")), field("node")
		if typ == "" || node == "" {
			return nil, badRequest("fields type and node are required")
		}
		r, err = c.reg.Unregister(ctx, caller, typ, node)
	case RegisterFCM, RegisterAPNS, UnregisterFCM, UnregisterAPNS:
		app := c.opts.FCMApp
		if cmd.Node == RegisterAPNS || cmd.Node == UnregisterAPNS {
			app = c.opts.APNSApp
		}
		// p2 reads the channel of a registration from muc, Conversations
		// names it in channel when it unregisters one.
		channel, perr := channelOf(field("muc", "channel"))
		if perr != nil {
			return nil, badRequest("%v", perr)
		}
		device := field("android-id", "device-id")
		if device == "" {
			return nil, badRequest("the device id (android-id) is required")
		}
		if cmd.Node == UnregisterFCM || cmd.Node == UnregisterAPNS {
			r, err = c.reg.UnregisterDevice(ctx, app, account, device, channel)
			break
		}
		token := field("token")
		if token == "" {
			return nil, badRequest("fields token and device id are required")
		}
		r, err = c.reg.RegisterDevice(ctx, app, account, device, channel, token)
	case RegisterDevice, UnregisterDevice:
		provider, token := field("provider"), field("device-token")
		if provider == "" || token == "" {
			return nil, badRequest("fields provider and device-token are required")
		}
		app, ok := c.opts.TigaseProviders[provider]
		if !ok {
			return nil, badRequest("unknown provider %q", provider)
		}
		if cmd.Node == UnregisterDevice {
			r, err = c.reg.UnregisterTigase(ctx, app, account, token)
		} else {
			r, err = c.reg.RegisterTigase(ctx, app, account, token)
		}
	case RegisterWebPush:
		device := field("device-id")
		token := field("subscription")
		if token == "" {
			token, err = webPushToken(field("endpoint"), field("p256dh"), field("auth"))
			if err != nil {
				return nil, badRequest("%v", err)
			}
		}
		if device == "" {
			return nil, badRequest("field device-id is required")
		}
		r, err = c.reg.RegisterDevice(ctx, c.opts.WebPushApp, account, device, "", token)
	}
	if err != nil {
		return nil, registrationError(err)
	}
	var fields []dataform.Field
	switch cmd.Node {
	case UnregisterFCM, UnregisterAPNS, UnregisterDevice:
		// p2 and Tigase answer a bare completed command.
		return &Command{Node: cmd.Node, SessionID: sessionID(), Status: "completed"}, nil
	case RegisterDevice:
		// What TigaseSwift's RegistrationResult reads: node, and
		// optionally features and max-payload-size.
		fields = []dataform.Field{
			{Var: "node", Type: "text-single", Values: []string{r.Node}},
			{Var: "features", Type: "text-multi", Values: TigaseFeatures},
		}
		if c.opts.MaxPayloadSize > 0 {
			fields = append(fields, dataform.Field{Var: "max-payload-size", Type: "text-single", Values: []string{strconv.Itoa(c.opts.MaxPayloadSize)}})
		}
	default:
		fields = []dataform.Field{
			{Var: "jid", Type: "jid-single", Values: []string{jid}},
			{Var: "node", Type: "text-single", Values: []string{r.Node}},
		}
		if cmd.Node != V1Unregister {
			fields = append(fields, dataform.Field{Var: "secret", Type: "text-single", Values: []string{r.Secret}})
		}
	}
	status := "completed"
	if cmd.Node == V1Register || cmd.Node == V1Unregister {
		// mod_push_appserver's wire form, which Monal matches exactly
		// (<status=complete> in MLIQProcessor.handleAppserverNodeRegistered);
		// Smack (yaxim) and the others take any status.
		status = "complete"
	}
	return &Command{
		Node:      cmd.Node,
		SessionID: sessionID(),
		Status:    status,
		Form:      &dataform.Form{Type: "result", Fields: fields},
	}, nil
}

// UnregisterTigaseDevice is unregister-device for an account named
// rather than vouched for by its server: Siskin asks the push
// component's HTTP API for it when it removes an account it cannot
// reach over XMPP (its server gone, its password changed). The account
// and the device token together name the registration, as the command's
// sender and token do; the token, which only the device and we know, is
// the proof. A device registered no more is appserver.ErrNotFound.
func (c *Commands) UnregisterTigaseDevice(ctx context.Context, account, provider, token string) error {
	if account == "" || provider == "" || token == "" {
		return fmt.Errorf("%w: account, provider and device-token are required", appserver.ErrBadRequest)
	}
	app, ok := c.opts.TigaseProviders[provider]
	if !ok {
		return fmt.Errorf("%w: unknown provider %q", appserver.ErrBadRequest, provider)
	}
	if strings.Contains(account, "/") {
		return fmt.Errorf("%w: the account must be a bare JID", appserver.ErrBadRequest)
	}
	a, err := accountOf(account)
	if err != nil {
		return fmt.Errorf("%w: %w", appserver.ErrBadRequest, err)
	}
	if len(c.opts.Domains) > 0 && !slices.Contains(c.opts.Domains, a.Domain) {
		return fmt.Errorf("%w: accounts of %s register through their own server's push component", appserver.ErrForbidden, a.Domain)
	}
	timeout := c.opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err = c.reg.UnregisterTigase(ctx, app, a, token)
	return err
}

// webPushToken writes a subscription given as three fields in the JSON
// form browsers give it, the form the webpush app validates and stores.
func webPushToken(endpoint, p256dh, auth string) (string, error) {
	if endpoint == "" || p256dh == "" || auth == "" {
		return "", errors.New("field subscription, or fields endpoint, p256dh and auth, are required")
	}
	var sub struct {
		Endpoint string `json:"endpoint"`
		Keys     struct {
			P256DH string `json:"p256dh"`
			Auth   string `json:"auth"`
		} `json:"keys"`
	}
	sub.Endpoint, sub.Keys.P256DH, sub.Keys.Auth = endpoint, p256dh, auth
	// As the browser's PushSubscription.toJSON() and the HTTP API's
	// tokens are written: without HTML escaping, which makes each & of
	// an endpoint six bytes against the token's limit.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(sub)
	return strings.TrimSuffix(b.String(), "\n"), err
}

func (c *Commands) typ(t string) string {
	if t == "" {
		return c.opts.DefaultApp
	}
	return t
}

func registrationError(err error) error {
	switch {
	case errors.Is(err, appserver.ErrUnknownType):
		return badRequest("unknown push type")
	case errors.Is(err, appserver.ErrInvalidToken), errors.Is(err, appserver.ErrBadRequest):
		return badRequest("%v", err)
	case errors.Is(err, appserver.ErrQuota), errors.Is(err, appserver.ErrLimited):
		return stanza.Error{Type: stanza.Wait, Condition: stanza.ResourceConstraint, Text: map[string]string{"": err.Error()}}
	case errors.Is(err, appserver.ErrForbidden):
		return stanza.Error{Type: stanza.Auth, Condition: stanza.Forbidden, Text: map[string]string{"": err.Error()}}
	case errors.Is(err, appserver.ErrNotFound):
		return stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound, Text: map[string]string{"": "node not found"}}
	case errors.Is(err, appserver.ErrUnconfirmed):
		// Stored, but another instance may still push with what it
		// cached: the client tries again, and finds it stored.
		return stanza.Error{Type: stanza.Wait, Condition: stanza.InternalServerError, Text: map[string]string{"": "not confirmed, try again later"}}
	}
	return stanza.Error{Type: stanza.Wait, Condition: stanza.InternalServerError}
}

func sessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// account is the account that sent a command, or its error answer: the
// sender is no account, or one of a domain this component does not
// speak for (Options.Domains).
func (c *Commands) account(from string) (appserver.Account, error) {
	a, err := accountOf(from)
	if err != nil {
		return a, badRequest("%v", err)
	}
	if len(c.opts.Domains) > 0 && !slices.Contains(c.opts.Domains, a.Domain) {
		return appserver.Account{}, stanza.Error{Type: stanza.Auth, Condition: stanza.Forbidden,
			Text: map[string]string{"": "accounts of " + a.Domain + " register through their own server's push component"}}
	}
	return a, nil
}

// accountOf normalises the sender's full JID to the account that owns the
// device: the same user from any resource, in any letter case, is one
// account.
func accountOf(from string) (appserver.Account, error) {
	// The account is the bare JID: a resource is never looked at, so
	// one PRECIS would refuse must not refuse the account.
	local, domain, _, err := jid.SplitString(from)
	if err != nil {
		return appserver.Account{}, fmt.Errorf("the sender's JID is not valid: %w", err)
	}
	if local == "" {
		return appserver.Account{}, errors.New("the sender must be an account, not a server")
	}
	bare, d, err := bareOf(local, domain)
	if err != nil {
		return appserver.Account{}, fmt.Errorf("the sender's JID is not valid: %w", err)
	}
	return appserver.Account{Bare: bare, Domain: d}, nil
}

// bareOf normalises a bare JID and returns it with its domainpart.
// PRECIS refuses localparts stringprep takes (symbols such as € or ♥,
// some contextual runes), and Prosody's and ejabberd's accounts and
// rooms have them: the user's server vouched for and prepared the JID,
// so such a localpart is folded in case and width as nodeprep does, and
// spellings of one account stay one.
func bareOf(local, domain string) (bare, domainpart string, err error) {
	j, err := jid.New(local, domain, "")
	if err == nil {
		return j.String(), j.Domainpart(), nil
	}
	d, derr := jid.New("", domain, "")
	l := cases.Fold().String(norm.NFKC.String(local))
	if derr != nil || !utf8.ValidString(local) || len(l) > 1023 || strings.ContainsAny(l, "\"&'/:<>@") || strings.IndexFunc(l, nodeprepProhibits) >= 0 {
		return "", "", err
	}
	return l + "@" + d.String(), d.Domainpart(), nil
}

// nodeprepProhibits is what nodeprep refuses in a localpart besides
// "&'/:<>@ (RFC 3920 Appendix A.5): spaces (C.1), controls (C.2),
// private use (C.3), and the format characters that change display
// (C.8, Cf). A space is also what a registration's Account separates
// an account from its channel by.
func nodeprepProhibits(r rune) bool {
	return unicode.IsSpace(r) || unicode.Is(unicode.Zs, r) || unicode.IsControl(r) ||
		unicode.Is(unicode.Co, r) || unicode.Is(unicode.Cf, r)
}

// channelOf normalises p2's muc field: a group chat's bare JID, or "" when
// the registration is the device's own.
func channelOf(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	local, domain, resource, err := jid.SplitString(v)
	if err != nil {
		return "", fmt.Errorf("the channel is not a valid JID: %w", err)
	}
	if resource != "" || strings.Contains(v, "/") {
		return "", errors.New("the channel must be a bare JID")
	}
	if local == "" {
		j, err := jid.New("", domain, "")
		if err != nil {
			return "", fmt.Errorf("the channel is not a valid JID: %w", err)
		}
		return j.String(), nil
	}
	bare, _, err := bareOf(local, domain)
	if err != nil {
		return "", fmt.Errorf("the channel is not a valid JID: %w", err)
	}
	return bare, nil
}

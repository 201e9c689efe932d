// Package xep0357 reads the pubsub publish a user's XMPP server sends to an
// app server (XEP-0357 "Push Notifications", §5): which node to push to,
// the secret it was enabled with, and the optional summary of what arrived.
package xep0357

import (
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

// Namespaces of a push publish.
const (
	NS       = "urn:xmpp:push:0"
	NSPubSub = "http://jabber.org/protocol/pubsub"
	// NSPriority marks a push the user should see (Tigase; Prosody's
	// mod_cloud_notify_priority_tag).
	NSPriority   = "tigase:push:priority:0"
	FormSummary  = "urn:xmpp:push:summary"
	FormPublish  = "http://jabber.org/protocol/pubsub#publish-options"
	maxFieldSize = 4096
)

// PubSub is the <pubsub/> payload of a publish IQ.
type PubSub struct {
	XMLName        xml.Name        `xml:"http://jabber.org/protocol/pubsub pubsub"`
	Publish        *Publish        `xml:"publish"`
	PublishOptions *PublishOptions `xml:"publish-options"`
}

// Publish is <publish node='...'><item><notification/></item></publish>.
type Publish struct {
	Node  string `xml:"node,attr"`
	Items []Item `xml:"item"`
}

// Item holds the notification.
type Item struct {
	Notification *Notification `xml:"urn:xmpp:push:0 notification"`
}

// Notification carries the summary form and, from some servers, a
// priority marker.
type Notification struct {
	Form     *dataform.Form `xml:"jabber:x:data x"`
	Priority *string        `xml:"tigase:push:priority:0 priority"`
	// Encrypted replaces the summary when the client asked its server to
	// encrypt notifications (Tigase, Prosody's mod_cloud_notify_encrypted).
	Encrypted *Encrypted `xml:"tigase:push:encrypt:0 encrypted"`
}

// Encrypted is <encrypted xmlns='tigase:push:encrypt:0' iv='…'>BASE64</encrypted>;
// type='voip' marks a call.
type Encrypted struct {
	IV      string `xml:"iv,attr"`
	Type    string `xml:"type,attr"`
	Payload string `xml:",chardata"`
}

// NSEncrypt is the namespace of encrypted notifications.
const NSEncrypt = "tigase:push:encrypt:0"

// maxEncrypted bounds an encrypted payload as it arrives; what the push
// service takes is smaller and checked when the push is built.
const maxEncrypted = 16 << 10

// PublishOptions carries the secret the client enabled push with.
type PublishOptions struct {
	Form *dataform.Form `xml:"jabber:x:data x"`
}

// Request is what a push publish asks for. Dialects that carry more (an
// encrypted payload, tokens in publish-options) add their fields here.
type Request struct {
	Node   string
	Secret string
	// Summary is nil when the publish carried no summary form.
	Summary *push.Summary
	// MarkedHigh: the notification carried
	// <priority xmlns='tigase:push:priority:0'>high</priority>, or an
	// encrypted call (type='voip').
	MarkedHigh bool
	// Encrypted is the notification as the user's server encrypted it,
	// or nil.
	Encrypted *push.Encrypted
	// Options holds the publish-options fields besides FORM_TYPE and
	// secret, first value each: what the client put into its enable form
	// and the user's server copies into every publish (fpush's pushModule,
	// MongooseIM's device_id and service, ...). At most maxOptions.
	Options map[string]string
}

// ErrMalformed is wrapped by every parse error: the publish cannot be a
// push request (answered modify/bad-request).
var ErrMalformed = errors.New("malformed push publish")

// ErrNoSecret is returned, with the rest of the request filled in, when
// the publish carries no secret. It wraps ErrMalformed: only dialects
// whose clients enable push without a secret (Tigase's register-device,
// tokenless pushes) go on with such a request.
var ErrNoSecret = fmt.Errorf("%w: publish-options has no secret", ErrMalformed)

// maxOptions bounds the publish-options fields kept.
const maxOptions = 16

// Parse reads a push request out of a decoded <pubsub/>. A missing or
// partial summary and unknown fields are fine: servers differ in what they
// send. The node is required; a publish without a secret is returned
// with ErrNoSecret.
func Parse(ps *PubSub) (Request, error) { return ParseInto(ps, nil) }

// ParseInto is Parse writing the request's summary, if it has one, to sum
// instead of a new one, unless sum is nil: a reader of many pushes can
// keep it with the rest of what it read a push into, one allocation
// fewer a push.
func ParseInto(ps *PubSub, sum *push.Summary) (Request, error) {
	if ps == nil || ps.Publish == nil {
		return Request{}, fmt.Errorf("%w: no publish element", ErrMalformed)
	}
	r := Request{Node: ps.Publish.Node}
	if r.Node == "" {
		return Request{}, fmt.Errorf("%w: publish has no node", ErrMalformed)
	}
	if len(r.Node) > maxFieldSize {
		return Request{}, fmt.Errorf("%w: node too long", ErrMalformed)
	}
	for _, it := range ps.Publish.Items {
		n := it.Notification
		if n == nil {
			continue
		}
		if n.Form != nil && r.Summary == nil {
			r.Summary = summary(n.Form, sum)
		}
		if n.Priority != nil && strings.TrimSpace(*n.Priority) == "high" {
			r.MarkedHigh = true
		}
		if n.Encrypted != nil && r.Encrypted == nil {
			e, err := encrypted(n.Encrypted)
			if err != nil {
				return Request{}, err
			}
			r.Encrypted = e
			if n.Encrypted.Type == "voip" {
				r.MarkedHigh = true
			}
		}
	}
	var form *dataform.Form
	if ps.PublishOptions != nil {
		form = ps.PublishOptions.Form
	}
	for _, f := range formFields(form) {
		if f.Var == "FORM_TYPE" || f.Var == "secret" || len(f.Values) == 0 || len(r.Options) >= maxOptions {
			continue
		}
		if len(f.Var) > maxFieldSize || len(f.Values[0]) > maxFieldSize {
			return Request{}, fmt.Errorf("%w: publish-options field too long", ErrMalformed)
		}
		if r.Options == nil {
			r.Options = make(map[string]string)
		}
		if _, dup := r.Options[f.Var]; !dup {
			r.Options[f.Var] = f.Values[0]
		}
	}
	secret, _ := form.Value("secret")
	if len(secret) > maxFieldSize {
		return Request{}, fmt.Errorf("%w: secret too long", ErrMalformed)
	}
	r.Secret = secret
	if secret == "" {
		return r, ErrNoSecret
	}
	return r, nil
}

// encrypted checks an encrypted notification: both parts base64, as
// Tigase and Prosody write them, and within bounds.
func encrypted(e *Encrypted) (*push.Encrypted, error) {
	payload, iv := strings.Join(strings.Fields(e.Payload), ""), strings.TrimSpace(e.IV)
	switch {
	case payload == "" || iv == "":
		return nil, fmt.Errorf("%w: encrypted notification without payload or iv", ErrMalformed)
	case len(payload) > maxEncrypted || len(iv) > 64:
		return nil, fmt.Errorf("%w: encrypted notification too large", ErrMalformed)
	}
	for _, v := range []string{payload, iv} {
		if _, err := base64.StdEncoding.DecodeString(v); err != nil {
			return nil, fmt.Errorf("%w: encrypted notification is not base64", ErrMalformed)
		}
	}
	return &push.Encrypted{Payload: payload, IV: iv}, nil
}

func formFields(f *dataform.Form) []dataform.Field {
	if f == nil {
		return nil
	}
	return f.Fields
}

// summary reads f's summary into s, or into a new one if s is nil.
// count is a summary's count field: a number, 0 for one that is none or
// below zero.
func count(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func summary(f *dataform.Form, s *push.Summary) *push.Summary {
	if s == nil {
		s = new(push.Summary)
	}
	*s = push.Summary{}
	// A count below zero means nothing, and would reach a WebPush
	// payload as it came: taken as none.
	if v, ok := f.Value("message-count"); ok {
		s.MessageCount = count(v)
	}
	if v, ok := f.Value("pending-subscription-count"); ok {
		s.PendingSubscriptionCount = count(v)
	}
	s.LastMessageSender, _ = f.Value("last-message-sender")
	// Prosody lists every summary field, with no <value/> for an
	// unimportant stanza; a value, even an empty one, marks an important
	// one.
	if v := f.Values("last-message-body"); len(v) > 0 {
		s.LastMessageBody, s.HasLastMessageBody = v[0], true
	}
	s.LastMessageSender = push.Truncate(s.LastMessageSender, maxFieldSize)
	s.LastMessageBody = push.Truncate(s.LastMessageBody, maxFieldSize)
	return s
}

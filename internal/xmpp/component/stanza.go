package component

import (
	"bytes"
	"encoding/xml"
	"sync"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
)

// Namespaces the component answers besides push and commands.
const (
	nsDiscoInfo  = "http://jabber.org/protocol/disco#info"
	nsDiscoItems = "http://jabber.org/protocol/disco#items"
	nsStanzas    = "urn:ietf:params:xml:ns:xmpp-stanzas"
)

// iq is an incoming IQ with the payloads we handle; anything else stays
// unparsed.
type iq struct {
	ID      string          `xml:"id,attr"`
	Type    string          `xml:"type,attr"`
	From    string          `xml:"from,attr"`
	To      string          `xml:"to,attr"`
	PubSub  *xep0357.PubSub `xml:"http://jabber.org/protocol/pubsub pubsub"`
	Command *adhoc.Command  `xml:"http://jabber.org/protocol/commands command"`
	Info    *discoQuery     `xml:"http://jabber.org/protocol/disco#info query"`
	Items   *discoQuery     `xml:"http://jabber.org/protocol/disco#items query"`
}

type discoQuery struct {
	Node string `xml:"node,attr"`
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// writeIQHead writes the opening of a reply to q.
func writeIQHead(b *bytes.Buffer, q *iq, typ string) {
	b.WriteString(`<iq type='`)
	b.WriteString(typ)
	if q.ID != "" {
		// Only the bad-request answer to an IQ without id has none.
		b.WriteString(`' id='`)
		xml.EscapeText(b, []byte(q.ID))
	}
	if q.From != "" {
		b.WriteString(`' to='`)
		xml.EscapeText(b, []byte(q.From))
	}
	if q.To != "" {
		b.WriteString(`' from='`)
		xml.EscapeText(b, []byte(q.To))
	}
	b.WriteString(`'`)
}

// resultIQ renders an empty result for q.
func resultIQ(b *bytes.Buffer, q *iq) {
	writeIQHead(b, q, "result")
	b.WriteString(`/>`)
}

// payloadIQ renders a result for q carrying v, marshalled.
func payloadIQ(b *bytes.Buffer, q *iq, v any) error {
	writeIQHead(b, q, "result")
	b.WriteString(`>`)
	if err := xml.NewEncoder(b).Encode(v); err != nil {
		return err
	}
	b.WriteString(`</iq>`)
	return nil
}

// errorIQ renders an error reply to q.
func errorIQ(b *bytes.Buffer, q *iq, e stanza.Error) {
	writeIQHead(b, q, "error")
	b.WriteString(`><error type='`)
	b.WriteString(string(e.Type))
	b.WriteString(`'><`)
	b.WriteString(string(e.Condition))
	b.WriteString(` xmlns='` + nsStanzas + `'/>`)
	if t := e.Text[""]; t != "" {
		b.WriteString(`<text xmlns='` + nsStanzas + `'>`)
		xml.EscapeText(b, []byte(t))
		b.WriteString(`</text>`)
	}
	b.WriteString(`</error></iq>`)
}

func stanzaErr(t stanza.ErrorType, c stanza.Condition, text string) stanza.Error {
	e := stanza.Error{Type: t, Condition: c}
	if text != "" {
		e.Text = map[string]string{"": text}
	}
	return e
}

// disco#info and disco#items answers.
type discoInfo struct {
	XMLName    xml.Name        `xml:"http://jabber.org/protocol/disco#info query"`
	Node       string          `xml:"node,attr,omitempty"`
	Identities []discoIdentity `xml:"identity"`
	Features   []discoFeature  `xml:"feature"`
}

type discoIdentity struct {
	Category string `xml:"category,attr"`
	Type     string `xml:"type,attr"`
	Name     string `xml:"name,attr,omitempty"`
}

type discoFeature struct {
	Var string `xml:"var,attr"`
}

type discoItems struct {
	XMLName xml.Name    `xml:"http://jabber.org/protocol/disco#items query"`
	Node    string      `xml:"node,attr,omitempty"`
	Items   []discoItem `xml:"item"`
}

type discoItem struct {
	JID  string `xml:"jid,attr"`
	Node string `xml:"node,attr,omitempty"`
	Name string `xml:"name,attr,omitempty"`
}

package xep0357

import (
	"encoding/xml"
	"strings"
	"unicode/utf8"

	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// UnmarshalXML reads <pubsub/> with a walk over its tokens instead of
// encoding/xml's reflection, a large part of the cost of a push (see
// docs/performance.md). The result is the one reflection gives
// for these types, field for field, for every input: the tests check it
// against reflection on the same types, fuzzed. A field added to PubSub or
// the types under it must be read here too, or those tests fail.
func (ps *PubSub) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	return ps.Walk(&xmlwalk.Decoder{Decoder: d}, &xmlwalk.Token{Kind: xmlwalk.StartElement, Name: start.Name, Attr: start.Attr})
}

// parts is the memory of a push's tree below <pubsub/>, taken in one
// allocation: the publish, its item and notification, the publish
// options, and two forms with room for their fields and first values.
// An allocation per element was ten of a push's allocations. A tree
// larger than this takes what it needs beyond it as before.
type parts struct {
	publish Publish
	options PublishOptions
	items   [1]Item
	note    Notification
	forms   [2]formParts

	// What the notifications' and the publish options' texts took of
	// their budgets.
	noteUsed, optionsUsed int

	// text holds the forms' values: a value a string of its own was an
	// allocation per field.
	text strings.Builder

	// The small fields last, together: each alone between words took a
	// word, and three words more put the component's IQ, which holds a
	// Memory, in the next size class of the allocator.
	nforms uint8 // of forms, at most len(forms)
	noted  bool  // note was taken
	// payloadKept: the first encrypted payload was read, with its own
	// budget.
	payloadKept bool
	taken       bool // by a walk, when it is a Memory's (see WalkIn)
}

// textSize is what text first takes room for: the values of a push's
// forms (a secret, a message's sender and the start of its body) fit.
const textSize = 256

// What a walk keeps of a tree, whatever its size. A publish may be far
// larger than anything we use of it (the whole of a long message's body,
// with Prosody's push_notification_with_body), and the component reads
// such a stanza rather than drop its stream; these bounds keep what the
// walk holds near the size of a real push. Each is above what Parse
// takes, so it answers as it would for the whole tree: a cut secret or
// option is still too long, a cut body is cut further for the summary,
// and a cut encrypted payload still too large. The notifications and the
// publish options have budgets of their own, so that no summary can
// crowd out the secret.
const (
	maxValue       = 2 * maxFieldSize // bytes kept of one value or priority
	maxPayload     = 2 * maxEncrypted // bytes kept of an encrypted payload
	maxNoteText    = 48 << 10         // bytes kept of the notifications' texts
	maxOptionsText = 16 << 10         // bytes kept of the publish options' values
	maxItems       = 16               // items kept of a publish
	maxFields      = 64               // fields kept of one form
	maxValues      = 64               // values kept of one field
	// What keeping a field, or a value, costs of a budget besides its
	// text: the memory of a dataform.Field, of a string.
	fieldCost, valueCost = 64, 16
)

// notification returns the memory of the next notification.
func (p *parts) notification() *Notification {
	if p.noted {
		return new(Notification)
	}
	p.noted = true
	return &p.note
}

// formParts is the memory of one form.
type formParts struct {
	form   dataform.Form
	fields [4]dataform.Field
	values [4]string
}

// form returns the memory of the next form.
func (p *parts) form() *formParts {
	if int(p.nforms) == len(p.forms) {
		return new(formParts)
	}
	p.nforms++
	return &p.forms[p.nforms-1]
}

// Memory is the memory of the tree below one <pubsub/>, for WalkIn: a
// reader of many pushes can allocate it together with the rest of what
// it reads a push into, in one allocation.
type Memory struct {
	p parts // p.taken once a walk took it
}

// Walk reads <pubsub/> from r, whose last token was start.
func (ps *PubSub) Walk(r xmlwalk.Reader, start *xmlwalk.Token) error {
	return ps.WalkIn(r, start, nil)
}

// WalkIn is Walk taking the tree's memory from mem, unless mem is nil or
// used by an earlier walk already.
func (ps *PubSub) WalkIn(r xmlwalk.Reader, start *xmlwalk.Token, mem *Memory) error {
	if err := xmlwalk.Expect(start, NSPubSub, "pubsub"); err != nil {
		return err
	}
	ps.XMLName = start.Name
	var p *parts
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if p == nil && (t.Name.Local == "publish" || t.Name.Local == "publish-options") {
			if mem != nil && !mem.p.taken {
				mem.p.taken = true
				p = &mem.p
			} else {
				p = new(parts)
			}
		}
		switch t.Name.Local {
		case "publish":
			if ps.Publish == nil {
				ps.Publish = &p.publish
			}
			err = ps.Publish.read(r, t, p)
		case "publish-options":
			if ps.PublishOptions == nil {
				ps.PublishOptions = &p.options
			}
			err = ps.PublishOptions.read(r, p)
		default:
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

// read reads <publish/>, taking memory from mem (not nil).
func (p *Publish) read(r xmlwalk.Reader, start *xmlwalk.Token, mem *parts) error {
	for _, a := range start.Attr {
		if a.Name.Local == "node" {
			p.Node = a.Value
			if len(p.Node) > maxValue {
				// Too long for Parse all the same.
				p.Node = strings.Clone(p.Node[:maxValue])
			}
		}
	}
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "item" && len(p.Items) < maxItems {
			if p.Items == nil {
				p.Items = mem.items[:0]
			}
			p.Items = append(p.Items, Item{})
			err = p.Items[len(p.Items)-1].read(r, mem)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (it *Item) read(r xmlwalk.Reader, mem *parts) error {
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "notification" && t.Name.Space == NS {
			if it.Notification == nil {
				it.Notification = mem.notification()
			}
			err = it.Notification.read(r, mem)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (n *Notification) read(r xmlwalk.Reader, mem *parts) error {
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		switch {
		case t.Name.Local == "x" && t.Name.Space == dataform.NS:
			n.Form, err = readFormInto(r, t, n.Form, mem, &mem.noteUsed, maxNoteText)
		case t.Name.Local == "encrypted" && t.Name.Space == NSEncrypt:
			if n.Encrypted == nil {
				n.Encrypted = new(Encrypted)
			}
			// The first payload's iv and type share its own budget: a
			// cut iv still looks like base64, a cut "voip" is no call.
			attrs := textBudget{used: &mem.noteUsed, max: maxNoteText}
			if !mem.payloadKept {
				attrs.max = mem.noteUsed + 2*maxValue
			}
			for _, a := range t.Attr {
				switch a.Name.Local {
				case "iv":
					n.Encrypted.IV = budgetAttr(a.Value, attrs)
				case "type":
					n.Encrypted.Type = budgetAttr(a.Value, attrs)
				}
			}
			// The first payload has a budget of its own, as the
			// secret has: a summary before it must not cut it to a
			// shorter ciphertext that still looks like base64.
			keep := min(maxPayload, max(maxNoteText-mem.noteUsed, 0))
			if !mem.payloadKept {
				keep, mem.payloadKept = maxPayload, true
			}
			n.Encrypted.Payload, err = xmlwalk.TextCut(r, nil, keep)
			mem.noteUsed += len(n.Encrypted.Payload)
		case t.Name.Local == "priority" && t.Name.Space == NSPriority:
			if n.Priority == nil {
				n.Priority = new(string)
			}
			*n.Priority, err = xmlwalk.TextCut(r, nil, min(maxValue, max(maxNoteText-mem.noteUsed, 0)))
			mem.noteUsed += len(*n.Priority)
		default:
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (o *PublishOptions) read(r xmlwalk.Reader, mem *parts) error {
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "x" && t.Name.Space == dataform.NS {
			o.Form, err = readFormInto(r, t, o.Form, mem, &mem.optionsUsed, maxOptionsText)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

// readFormInto reads a form into f, which is nil for the element's first
// form: a repeated form merges into the first, as with reflection. It
// returns the form read into.
func readFormInto(r xmlwalk.Reader, start *xmlwalk.Token, f *dataform.Form, mem *parts, used *int, budget int) (*dataform.Form, error) {
	b := textBudget{used: used, max: budget, secret: used == &mem.optionsUsed}
	if f != nil {
		return f, readForm(r, start, f, nil, &mem.text, b)
	}
	fp := mem.form()
	return &fp.form, readForm(r, start, &fp.form, fp, &mem.text, b)
}

// cutAttr is s cut to at most max bytes, where a UTF-8 sequence begins,
// in a string of its own.
func cutAttr(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return strings.Clone(s[:max])
}

// budgetAttr is an attribute kept (a field's var or type, a form's type,
// an encrypted payload's iv or type), cut as values are, counted in b.
func budgetAttr(s string, b textBudget) string {
	s = cutAttr(s, min(maxValue, max(b.max-*b.used, 0)))
	*b.used += len(s)
	return s
}

// textBudget is what values may still take of their budget of max bytes.
type textBudget struct {
	used *int
	max  int
	// secret: the publish options', where the secret is kept past max.
	secret bool
}

// readForm reads a form into f, taking memory from mem unless it is nil,
// and writing the values to text.
func readForm(r xmlwalk.Reader, start *xmlwalk.Token, f *dataform.Form, mem *formParts, text *strings.Builder, b textBudget) error {
	f.XMLName = start.Name
	for _, a := range start.Attr {
		if a.Name.Local == "type" {
			f.Type = budgetAttr(a.Value, b)
		}
	}
	// The fields' first values share one array: a push's forms have
	// a few fields of one value each, and a slice per field was an
	// allocation per field.
	var values []string
	if mem != nil {
		values = mem.values[:0]
	}
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		keep, fb := t.Name.Local == "field" && len(f.Fields) < maxFields && *b.used < b.max, b
		if b.secret && t.Name.Local == "field" && isSecret(t) && !hasSecret(f) {
			// The publish options' first secret has a budget of its
			// own, whatever the other fields took: Parse looks for it
			// among all the fields of the whole tree.
			keep, fb = true, textBudget{used: new(int), max: fieldCost + len("secret") + maxValue + valueCost}
		}
		if keep {
			b := fb
			// A field kept costs its memory, text or not.
			*b.used += fieldCost
			switch {
			case f.Fields != nil:
			case mem != nil:
				f.Fields = mem.fields[:0]
			default:
				f.Fields = make([]dataform.Field, 0, 4)
			}
			f.Fields = append(f.Fields, dataform.Field{})
			err = readField(r, t, &f.Fields[len(f.Fields)-1], &values, text, b)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

// isSecret reports whether the field t begins is the secret's.
func isSecret(t *xmlwalk.Token) bool {
	v := ""
	for _, a := range t.Attr {
		if a.Name.Local == "var" {
			v = a.Value // the last, as reflection has it
		}
	}
	return v == "secret"
}

// hasSecret reports whether f holds the secret's field already.
func hasSecret(f *dataform.Form) bool {
	for _, x := range f.Fields {
		if x.Var == "secret" {
			return true
		}
	}
	return false
}

// formTypes are the FORM_TYPEs of a push's forms, read without a copy.
var formTypes = []string{FormSummary, FormPublish}

// readField reads a field into f; its first value goes into values.
func readField(r xmlwalk.Reader, start *xmlwalk.Token, f *dataform.Field, values *[]string, text *strings.Builder, b textBudget) error {
	for _, a := range start.Attr {
		switch a.Name.Local {
		case "var":
			f.Var = budgetAttr(a.Value, b)
		case "type":
			f.Type = budgetAttr(a.Value, b)
		}
	}
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "value" && len(f.Values) < maxValues && *b.used < b.max {
			if text.Cap() == 0 {
				text.Grow(textSize)
			}
			keep := min(maxValue, max(b.max-*b.used, 0))
			var v string
			if f.Var == "FORM_TYPE" {
				v, err = xmlwalk.TextCut(r, text, keep, formTypes...)
			} else {
				v, err = xmlwalk.TextCut(r, text, keep)
			}
			*b.used += len(v) + valueCost
			if len(f.Values) == 0 {
				if *values == nil {
					*values = make([]string, 0, 4)
				}
				// Capped at one: a second value must not overwrite
				// the next field's first.
				*values = append(*values, v)
				n := len(*values)
				f.Values = (*values)[n-1 : n : n]
			} else {
				f.Values = append(f.Values, v)
			}
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

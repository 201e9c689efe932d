package modpushappserver

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on a data file, so a corrupt or hostile one cannot make the
// parser use much memory or stack.
const (
	maxDataFile  = 1 << 20
	maxDepth     = 16
	maxTableSize = 10000
)

// parseLuaData reads what Prosody's util.serialization writes for a data
// file: "return" followed by one Lua table constructor whose keys and
// values are literals (strings, numbers, booleans, nested tables). It is a
// parser for that data format only: names, calls, operators and everything
// else a Lua program could contain are errors, never evaluated.
//
// Tables with only string keys come back as map[string]any; array items
// get their position as key ("1", "2", ...). Numbers are float64.
func parseLuaData(src []byte) (map[string]any, error) {
	if len(src) > maxDataFile {
		return nil, fmt.Errorf("larger than %d bytes", maxDataFile)
	}
	p := &luaParser{s: string(src)}
	p.skipSpace()
	if !p.keyword("return") {
		return nil, p.errorf("want \"return {\"")
	}
	p.skipSpace()
	if p.peek() != '{' {
		return nil, p.errorf("want a table after return")
	}
	t, err := p.table(1)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.peek() == ';' {
		p.i++
		p.skipSpace()
	}
	if p.i != len(p.s) {
		return nil, p.errorf("unexpected text after the table")
	}
	return t, nil
}

type luaParser struct {
	s string
	i int
}

func (p *luaParser) errorf(format string, args ...any) error {
	line := 1 + strings.Count(p.s[:min(p.i, len(p.s))], "\n")
	return fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...))
}

func (p *luaParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

// skipSpace skips white space and comments.
func (p *luaParser) skipSpace() {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			p.i++
		case strings.HasPrefix(p.s[p.i:], "--"):
			p.i += 2
			if level, ok := p.longOpen(); ok {
				if _, err := p.longBody(level); err != nil {
					p.i = len(p.s)
				}
				continue
			}
			// A short comment ends at \n or \r, as in Lua's lexer.
			if j := strings.IndexAny(p.s[p.i:], "\n\r"); j >= 0 {
				p.i += j + 1
			} else {
				p.i = len(p.s)
			}
		default:
			return
		}
	}
}

func isIdentByte(c byte, first bool) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
}

func (p *luaParser) ident() string {
	j := p.i
	for j < len(p.s) && isIdentByte(p.s[j], j == p.i) {
		j++
	}
	id := p.s[p.i:j]
	p.i = j
	return id
}

func (p *luaParser) keyword(kw string) bool {
	save := p.i
	if p.ident() == kw {
		return true
	}
	p.i = save
	return false
}

func (p *luaParser) table(depth int) (map[string]any, error) {
	if depth > maxDepth {
		return nil, p.errorf("tables nested deeper than %d", maxDepth)
	}
	p.i++ // {
	t := map[string]any{}
	next := 1
	for {
		p.skipSpace()
		if p.peek() == '}' {
			p.i++
			return t, nil
		}
		if len(t) >= maxTableSize {
			return nil, p.errorf("table with more than %d items", maxTableSize)
		}
		var key string
		switch c := p.peek(); {
		case c == '[' && !p.atLongString():
			p.i++
			p.skipSpace()
			k, err := p.value(depth)
			if err != nil {
				return nil, err
			}
			switch k := k.(type) {
			case string:
				key = k
			case float64:
				key = strconv.FormatFloat(k, 'f', -1, 64)
			default:
				return nil, p.errorf("table key of type %T", k)
			}
			p.skipSpace()
			if p.peek() != ']' {
				return nil, p.errorf("want ] after a key")
			}
			p.i++
			if err := p.equals(); err != nil {
				return nil, err
			}
		case isIdentByte(c, true):
			save := p.i
			id := p.ident()
			p.skipSpace()
			if p.peek() == '=' && id != "true" && id != "false" && id != "nil" {
				key = id
				p.i++
				break
			}
			p.i = save
			fallthrough
		default:
			key = strconv.Itoa(next)
			next++
		}
		p.skipSpace()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		if v != nil { // as in Lua, a nil value is no entry
			t[key] = v
		}
		p.skipSpace()
		switch p.peek() {
		case ',', ';':
			p.i++
		case '}':
		default:
			return nil, p.errorf("want , or ; or } after a value")
		}
	}
}

func (p *luaParser) equals() error {
	p.skipSpace()
	if p.peek() != '=' {
		return p.errorf("want = after a key")
	}
	p.i++
	return nil
}

func (p *luaParser) atLongString() bool {
	save := p.i
	_, ok := p.longOpen()
	p.i = save
	return ok
}

func (p *luaParser) value(depth int) (any, error) {
	switch c := p.peek(); {
	case c == '{':
		return p.table(depth + 1)
	case c == '"' || c == '\'':
		return p.quoted()
	case c == '[':
		level, ok := p.longOpen()
		if !ok {
			return nil, p.errorf("unexpected [")
		}
		return p.longBody(level)
	case c == '-' || c == '.' || '0' <= c && c <= '9':
		return p.number()
	case c == '(':
		// Infinities and NaN, which util.serialization writes as (1/0),
		// are no timestamp or token either.
		return nil, p.errorf("expressions are not data")
	case isIdentByte(c, true):
		switch id := p.ident(); id {
		case "true":
			return true, nil
		case "false":
			return false, nil
		case "nil":
			return nil, nil
		default:
			return nil, p.errorf("name %q is not data", id)
		}
	case c == 0:
		return nil, p.errorf("unexpected end of file")
	default:
		return nil, p.errorf("unexpected %q", c)
	}
}

func (p *luaParser) number() (any, error) {
	j := p.i
	if j < len(p.s) && p.s[j] == '-' {
		j++
	}
	for j < len(p.s) && (strings.IndexByte("0123456789abcdefABCDEFxX.+-pP", p.s[j]) >= 0) {
		// A sign belongs to the number only right after an exponent mark.
		if (p.s[j] == '+' || p.s[j] == '-') && !strings.ContainsRune("eEpP", rune(p.s[j-1])) {
			break
		}
		j++
	}
	text := p.s[p.i:j]
	var f float64
	var err error
	digits, neg := strings.CutPrefix(text, "-")
	if strings.HasPrefix(digits, "0x") || strings.HasPrefix(digits, "0X") {
		var n uint64
		n, err = strconv.ParseUint(digits[2:], 16, 64)
		f = float64(n)
		if neg {
			f = -f
		}
	} else {
		f, err = strconv.ParseFloat(text, 64)
	}
	if err != nil || text == "" || text == "-" {
		return nil, p.errorf("bad number %q", text)
	}
	p.i = j
	return f, nil
}

// longOpen consumes "[[" or "[==[" and returns the level.
func (p *luaParser) longOpen() (int, bool) {
	if p.peek() != '[' {
		return 0, false
	}
	j := p.i + 1
	for j < len(p.s) && p.s[j] == '=' {
		j++
	}
	if j >= len(p.s) || p.s[j] != '[' {
		return 0, false
	}
	level := j - p.i - 1
	p.i = j + 1
	return level, true
}

func (p *luaParser) longBody(level int) (string, error) {
	end := "]" + strings.Repeat("=", level) + "]"
	k := strings.Index(p.s[p.i:], end)
	if k < 0 {
		return "", p.errorf("unterminated long string")
	}
	body := luaNewlines(p.s[p.i : p.i+k])
	p.i += k + len(end)
	// Lua drops a newline right after the opening bracket.
	return strings.TrimPrefix(body, "\n"), nil
}

// luaNewlines reads line ends as Lua's lexer does in a long string: each
// of \n, \r, \r\n and \n\r is one \n, so that a file saved with CRLF
// line ends gives the strings Lua would.
func luaNewlines(s string) string {
	if strings.IndexByte(s, '\r') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\n' && c != '\r' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('\n')
		if i+1 < len(s) && (s[i+1] == '\n' || s[i+1] == '\r') && s[i+1] != c {
			i++
		}
	}
	return b.String()
}

var simpleEscapes = map[byte]byte{
	'a': '\a', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v',
	'\\': '\\', '"': '"', '\'': '\'',
}

// quoted reads a "..." or '...' string with Lua's escapes (5.1 to 5.4):
// util.serialization writes \ddd for bytes outside printable ASCII, older
// Prosody's %q a backslash before a newline.
func (p *luaParser) quoted() (string, error) {
	q := p.s[p.i]
	p.i++
	var b strings.Builder
	for {
		if p.i >= len(p.s) {
			return "", p.errorf("unterminated string")
		}
		c := p.s[p.i]
		switch {
		case c == q:
			p.i++
			return b.String(), nil
		case c == '\n' || c == '\r':
			return "", p.errorf("newline in string")
		case c != '\\':
			b.WriteByte(c)
			p.i++
			continue
		}
		p.i++ // backslash
		if p.i >= len(p.s) {
			return "", p.errorf("unterminated string")
		}
		e := p.s[p.i]
		if e == '\r' || e == '\n' {
			// An escaped line end, of any of Lua's four kinds, is one \n.
			b.WriteByte('\n')
			p.i++
			if p.i < len(p.s) && (p.s[p.i] == '\n' || p.s[p.i] == '\r') && p.s[p.i] != e {
				p.i++
			}
			continue
		}
		if r, ok := simpleEscapes[e]; ok {
			b.WriteByte(r)
			p.i++
			continue
		}
		switch {
		case '0' <= e && e <= '9':
			j := p.i
			for j < len(p.s) && j < p.i+3 && '0' <= p.s[j] && p.s[j] <= '9' {
				j++
			}
			n, _ := strconv.Atoi(p.s[p.i:j])
			if n > 255 {
				return "", p.errorf("escape \\%d out of range", n)
			}
			b.WriteByte(byte(n))
			p.i = j
		case e == 'x':
			if p.i+3 > len(p.s) {
				return "", p.errorf("bad \\x escape")
			}
			n, err := strconv.ParseUint(p.s[p.i+1:p.i+3], 16, 8)
			if err != nil {
				return "", p.errorf("bad \\x escape")
			}
			b.WriteByte(byte(n))
			p.i += 3
		case e == 'z':
			p.i++
			for p.i < len(p.s) && strings.IndexByte(" \t\r\n\f\v", p.s[p.i]) >= 0 {
				p.i++
			}
		case e == 'u':
			end := strings.IndexByte(p.s[p.i:], '}')
			if !strings.HasPrefix(p.s[p.i:], "u{") || end < 0 {
				return "", p.errorf("bad \\u escape")
			}
			n, err := strconv.ParseUint(p.s[p.i+2:p.i+end], 16, 32)
			if err != nil || n > utf8.MaxRune {
				return "", p.errorf("bad \\u escape")
			}
			b.WriteRune(rune(n))
			p.i += end + 1
		default:
			return "", p.errorf("unknown escape \\%c", e)
		}
	}
}

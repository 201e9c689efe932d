package modpushappserver

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseLuaData(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want map[string]any
		err  string
	}{
		{"prosody file", "return {\n\t[\"type\"] = \"apns\";\n\t[\"token\"] = \"\";\n};\n",
			map[string]any{"type": "apns", "token": ""}, ""},
		{"escapes", `return { ["a"] = "q\"\\\n\t\0651\195\169", b = 'x\'y', c = "\x41\u{e9}\z
		   z", d = "line\
two" };`, map[string]any{"a": "q\"\\\n\tA1é", "b": "x'y", "c": "Aéz", "d": "line\ntwo"}, ""},
		{"numbers booleans nested", "-- comment\nreturn { n = 12, f = -1.5e3, h = 0x10, yes = true, no = false, gone = nil, t = { 1, \"two\", [10] = [[long]] } }",
			map[string]any{"n": 12.0, "f": -1500.0, "h": 16.0, "yes": true, "no": false, "t": map[string]any{"1": 1.0, "2": "two", "10": "long"}}, ""},
		{"crlf line ends", "return {\r\n\ta = [[\r\none\r\ntwo\rthree\n\rfour]];\r\n\tb = \"x\\\r\ny\";\r\n\tc = [==[\n\rz]==];\r\n};\r\n",
			map[string]any{"a": "one\ntwo\nthree\nfour", "b": "x\ny", "c": "z"}, ""},
		// lua5.4 reads these so.
		{"comment ends at cr", "return {\r-- note\rtype = \"apns\";\r}\r", map[string]any{"type": "apns"}, ""},
		{"comment ends at a lone cr", "return {\n-- note\rtype = \"apns\";\n}\n", map[string]any{"type": "apns"}, ""},
		{"carriage return in string", "return { a = \"x\ry\" }", nil, "newline in string"},
		{"long string levels", "return { s = [==[a]]b]==], --[[ block\ncomment ]] k = 1 }", map[string]any{"s": "a]]b", "k": 1.0}, ""},
		{"empty", "return {};", map[string]any{}, ""},
		{"function call", `return { ["a"] = os.execute("touch /tmp/x") };`, nil, `name "os"`},
		{"call instead of table", `return os.execute("id")`, nil, "want a table"},
		{"code before", `os.exit(1) return {}`, nil, "want \"return {\""},
		{"code after", "return {}; os.exit(1)", nil, "after the table"},
		{"expression", "return { a = (1/0) }", nil, "expressions"},
		{"concat", `return { a = "x" .. "y" }`, nil, "after a value"},
		{"unterminated string", `return { a = "x }`, nil, "unterminated"},
		{"newline in string", "return { a = \"x\ny\" }", nil, "newline in string"},
		{"unterminated table", `return { a = "x"`, nil, "after a value"},
		{"unterminated value", `return { a = `, nil, "end of file"},
		{"bad escape", `return { a = "\q" }`, nil, "unknown escape"},
		{"big escape", `return { a = "\999" }`, nil, "out of range"},
		{"deep", "return " + strings.Repeat("{", 40) + strings.Repeat("}", 40), nil, "nested deeper"},
		{"not lua", "\x00\x01binary", nil, "want \"return {\""},
		{"json", `{"type": "apns"}`, nil, "want \"return {\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLuaData([]byte(tt.src))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestParseLuaDataTooLarge(t *testing.T) {
	src := "return { a = \"" + strings.Repeat("x", maxDataFile) + "\" }"
	if _, err := parseLuaData([]byte(src)); err == nil {
		t.Fatal("a file over the size limit was parsed")
	}
}

func TestDecodeName(t *testing.T) {
	for in, want := range map[string]string{
		"push%2eexample%2eorg": "push.example.org",
		"ft%2dlua%2d0000":      "ft-lua-0000",
		"plain":                "plain",
		"bad%zz%":              "bad%zz%",
		"%41%2":                "A%2",
	} {
		if got := decodeName(in); got != want {
			t.Errorf("decodeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseLuaData(f *testing.F) {
	f.Add([]byte("return { [\"a\"] = \"b\\065\"; n = 1.5, t = { true, [[x]] } };"))
	f.Fuzz(func(t *testing.T, src []byte) {
		_, _ = parseLuaData(src)
	})
}

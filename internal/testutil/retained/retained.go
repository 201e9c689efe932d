// Package retained measures what a parsed value keeps, for the tests that
// hold a parser's memory to its bounds.
package retained

import "reflect"

// StringBytes sums the bytes of every string reachable from v (through
// pointers, interfaces, structs, slices and arrays; not maps): what a
// parsed tree keeps of its input, attributes included.
func StringBytes(v any) int { return stringBytes(reflect.ValueOf(v)) }

func stringBytes(v reflect.Value) int {
	switch v.Kind() {
	case reflect.String:
		return v.Len()
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return 0
		}
		return stringBytes(v.Elem())
	case reflect.Struct:
		n := 0
		for i := range v.NumField() {
			n += stringBytes(v.Field(i))
		}
		return n
	case reflect.Slice, reflect.Array:
		n := 0
		for i := range v.Len() {
			n += stringBytes(v.Index(i))
		}
		return n
	}
	return 0
}

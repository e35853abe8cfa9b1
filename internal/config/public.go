package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"time"
)

// PublicJSON is the config as the admin API shows it (GET /api/v1/config):
// JSON with the YAML key names, every key in file order with its value
// after defaults, durations written as in the file ("10s"), an absent
// block (tls, sticky, health_check…) left out. Secret values are blanked:
// a field tagged `secret:"redact"` is written as "". Files named in the
// config (admin.token_file, a redis password_file) are written as paths
// and never read here.
//
// YAML being a superset of JSON, Parse reads the result back to an equal
// config (minus the secrets), which is what `sluice diff` does with the
// running instance's.
func (c *Config) PublicJSON() []byte {
	var b bytes.Buffer
	writePublic(&b, reflect.ValueOf(c).Elem())
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		panic(fmt.Sprintf("config: PublicJSON wrote invalid JSON: %v", err)) // a bug in writePublic
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// writePublic writes v as JSON per PublicJSON's rules.
func writePublic(b *bytes.Buffer, v reflect.Value) {
	switch {
	case v.Type() == durationType:
		writeJSON(b, time.Duration(v.Int()).String())
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			b.WriteString("null")
			return
		}
		writePublic(b, v.Elem())
	case v.Kind() == reflect.Struct:
		b.WriteByte('{')
		n := 0
		for i := range v.NumField() {
			f := v.Type().Field(i)
			key := publicKey(f)
			fv := v.Field(i)
			if key == "" || (fv.Kind() == reflect.Pointer && fv.IsNil()) {
				continue
			}
			if n > 0 {
				b.WriteByte(',')
			}
			n++
			writeJSON(b, key)
			b.WriteByte(':')
			if f.Tag.Get("secret") == "redact" {
				writeJSON(b, "")
				continue
			}
			writePublic(b, fv)
		}
		b.WriteByte('}')
	case v.Kind() == reflect.Slice:
		b.WriteByte('[')
		for i := range v.Len() {
			if i > 0 {
				b.WriteByte(',')
			}
			writePublic(b, v.Index(i))
		}
		b.WriteByte(']')
	case v.Kind() == reflect.Map:
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSON(b, k)
			b.WriteByte(':')
			writePublic(b, v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())))
		}
		b.WriteByte('}')
	default:
		writeJSON(b, v.Interface())
	}
}

// publicKey is the YAML key of a field, "" for one the file does not have.
func publicKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	key, _, _ := bytes.Cut([]byte(f.Tag.Get("yaml")), []byte(","))
	if len(key) == 0 || string(key) == "-" {
		return ""
	}
	return string(key)
}

func writeJSON(b *bytes.Buffer, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("config: PublicJSON: %v", err)) // only plain scalars get here
	}
	b.Write(data)
}

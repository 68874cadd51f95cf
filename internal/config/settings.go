package config

import (
	"reflect"
	"strings"
	"sync"
)

// envPrefix starts the name of every environment variable that overrides a
// setting.
const envPrefix = "FEDSENDER_"

// setting is one leaf of Config: a value that is set from a single YAML key
// or a single environment variable.
type setting struct {
	path   string       // YAML path, e.g. "backoff.min_interval"
	env    string       // e.g. "FEDSENDER_BACKOFF_MIN_INTERVAL"
	index  []int        // field index from Config, for reflect.Value.FieldByIndex
	typ    reflect.Type // the field's type, which chooses its parser
	secret bool         // hidden by Redacted and LogValue (tag secret:"true")
}

// field returns the setting's field inside c, settable.
func (s setting) field(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(s.index)
}

// schema is the table of every setting, derived once from Config's yaml
// tags. It is the single source of YAML paths and environment names.
type schema struct {
	settings []setting
	byPath   map[string]setting
	byEnv    map[string]setting
	groups   map[string]bool // paths of nested structs, such as "nats"
}

var loadSchema = sync.OnceValue(func() *schema {
	s := &schema{
		byPath: map[string]setting{},
		byEnv:  map[string]setting{},
		groups: map[string]bool{},
	}
	s.add(reflect.TypeFor[Config](), "", nil)
	return s
})

// add records every field of struct type t, whose YAML path is prefix.
func (s *schema) add(t reflect.Type, prefix string, index []int) {
	for i := range t.NumField() {
		f := t.Field(i)
		path := joinPath(prefix, yamlName(f))
		idx := append(append([]int(nil), index...), i)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			s.groups[path] = true
			s.add(f.Type, path, idx)
			continue
		}
		st := setting{path: path, env: envName(path), index: idx, typ: f.Type, secret: isSecret(f)}
		s.settings = append(s.settings, st)
		s.byPath[path] = st
		s.byEnv[st.env] = st
	}
}

// yamlName is the key of f in YAML: the first element of its yaml tag.
// Every field of Config must have one, which the tests check.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// isSecret reports whether f must be hidden from logs.
func isSecret(f reflect.StructField) bool {
	return f.Tag.Get("secret") == "true"
}

func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// envName is the environment variable that overrides the setting at path.
func envName(path string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

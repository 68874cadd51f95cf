package config

import (
	"fmt"
	"reflect"
	"testing"
)

func TestEnvNamesAreUnique(t *testing.T) {
	seen := map[string]string{}
	for _, s := range loadSchema().settings {
		if other, ok := seen[s.env]; ok {
			t.Errorf("%s and %s both map to %s", other, s.path, s.env)
		}
		seen[s.env] = s.path
	}
}

func TestEnvNames(t *testing.T) {
	for path, want := range map[string]string{
		"server_name":                   "FEDSENDER_SERVER_NAME",
		"signing_key_path":              "FEDSENDER_SIGNING_KEY_PATH",
		"admin.token":                   "FEDSENDER_ADMIN_TOKEN",
		"nats.url":                      "FEDSENDER_NATS_URL",
		"backoff.min_interval":          "FEDSENDER_BACKOFF_MIN_INTERVAL",
		"federation.ip_range_allowlist": "FEDSENDER_FEDERATION_IP_RANGE_ALLOWLIST",
	} {
		s, ok := loadSchema().byPath[path]
		if !ok {
			t.Errorf("no setting %s", path)
			continue
		}
		if s.env != want {
			t.Errorf("%s: env name %s, want %s", path, s.env, want)
		}
	}
}

// TestEveryFieldHasYAMLTag guards the schema: a field without a yaml tag
// would get an empty path and env name.
func TestEveryFieldHasYAMLTag(t *testing.T) {
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if yamlName(f) == "" {
				t.Errorf("%s.%s has no yaml tag", typ.Name(), f.Name)
			}
			if f.Type.Kind() == reflect.Struct && f.Type != durationType {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeFor[Config]())
}

// TestEverySettingParses checks that every setting's type has a parser,
// by formatting its default and parsing it back.
func TestEverySettingParses(t *testing.T) {
	def := Default()
	for _, s := range loadSchema().settings {
		c := Default()
		var err error
		if isList(s.typ) {
			err = setList(s.field(&c), []string{"10.0.0.0/8"})
		} else {
			err = setScalar(s.field(&c), fmt.Sprint(s.field(&def).Interface()))
		}
		if err != nil {
			t.Errorf("%s: %v", s.path, err)
		}
	}
}

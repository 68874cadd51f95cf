package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads the YAML file at path and returns the defaults overridden by
// the file, overridden in turn by the FEDSENDER_* variables of environ (in
// the os.Environ format), validated. An empty path means no file: defaults
// and environment only.
func Load(path string, environ []string) (Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return Config{}, fmt.Errorf("read config: %w", err)
		}
	}
	return Parse(data, environ)
}

// Parse is Load with the file's contents given as data.
//
// Problems in the file and the environment are reported together, joined
// with errors.Join; Validate runs only once both parse cleanly.
func Parse(data []byte, environ []string) (Config, error) {
	c := Default()
	s := loadSchema()
	if err := errors.Join(s.applyYAML(&c, data), s.applyEnv(&c, environ)); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// applyYAML sets the settings that the YAML document data names. An empty
// document sets nothing.
func (s *schema) applyYAML(c *Config, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("config: want one YAML document, found several")
	}
	root := doc.Content[0]
	if isNull(root) {
		return nil
	}
	return s.applyMapping(c, "", root)
}

// applyMapping walks the mapping node n found at path against the schema.
// It reports every problem, not just the first.
func (s *schema) applyMapping(c *Config, path string, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: expected a mapping, got %s", displayPath(path), describe(n))
	}
	var errs []error
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i].Value, resolve(n.Content[i+1])
		p := joinPath(path, key)
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: duplicate key", p))
			continue
		}
		seen[key] = true
		if st, ok := s.byPath[p]; ok {
			if err := applyNode(st.field(c), value); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
			}
			continue
		}
		if s.groups[p] {
			if !isNull(value) {
				errs = append(errs, s.applyMapping(c, p, value))
			}
			continue
		}
		errs = append(errs, fmt.Errorf("%s: unknown key", p))
	}
	return errors.Join(errs...)
}

// applyNode sets the leaf field v from the YAML value n. A null value
// (key present but empty) leaves the default, as yaml.v3 would.
func applyNode(v reflect.Value, n *yaml.Node) error {
	if isNull(n) {
		return nil
	}
	if isList(v.Type()) {
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("expected a list, got %s", describe(n))
		}
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			item = resolve(item)
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("expected a list of values, got an item that is %s", describe(item))
			}
			items = append(items, item.Value)
		}
		return setList(v, items)
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a single value, got %s", describe(n))
	}
	return setScalar(v, n.Value)
}

// applyEnv sets the settings named by the FEDSENDER_* variables of environ.
// Any other FEDSENDER_* variable is an error, so that a misspelt override
// does not go unnoticed; only the variables Kubernetes injects for a
// Service named fedsender-* are passed over (see isServiceLink). Lists are
// comma-separated; an empty value is an empty list.
func (s *schema) applyEnv(c *Config, environ []string) error {
	var errs []error
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) {
			continue
		}
		st, ok := s.byEnv[name]
		if !ok && isServiceLink(name, value) {
			continue // a Kubernetes Service's variable, not a setting
		}
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown environment variable (no such setting)", name))
			continue
		}
		if err := applyEnvValue(st.field(c), value); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", name, st.path, err))
		}
	}
	return errors.Join(errs...)
}

func applyEnvValue(v reflect.Value, value string) error {
	if !isList(v.Type()) {
		return setScalar(v, value)
	}
	var items []string
	if strings.TrimSpace(value) != "" {
		items = strings.Split(value, ",")
		for i := range items {
			items[i] = strings.TrimSpace(items[i])
		}
	}
	return setList(v, items)
}

// resolve follows an alias to the node it refers to.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names the YAML type of n for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	default:
		return "an unexpected node"
	}
}

// displayPath names the document root in errors, whose path is empty.
func displayPath(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

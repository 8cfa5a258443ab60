package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/v2"
)

// Load reads, decodes and validates the config file at path. The returned
// error lists every problem found, one per line, each starting with the key
// path at fault.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return c, nil
}

// bytesProvider hands koanf a config already in memory.
type bytesProvider []byte

func (b bytesProvider) ReadBytes() ([]byte, error) { return b, nil }
func (b bytesProvider) Read() (map[string]any, error) {
	return nil, errors.New("bytesProvider does not support Read")
}

// Parse decodes and validates a config from YAML bytes.
func Parse(data []byte) (*Config, error) {
	// The delimiter only matters for koanf's flat key index; nested maps
	// keep keys such as "retention.ms" whole, which is what we decode.
	k := koanf.New(".")
	if err := k.Load(bytesProvider(data), yaml.Parser()); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var c Config
	dec := &mapstructure.DecoderConfig{
		TagName:          "koanf",
		ErrorUnused:      true,  // unknown keys are errors
		WeaklyTypedInput: false, // "three" is not a replication factor
		DecodeHook:       propertiesHook,
		// Key names are exact: "statedir" is a typo, not stateDir.
		MatchName: func(mapKey, fieldName string) bool { return mapKey == fieldName },
	}
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{DecoderConfig: dec}); err != nil {
		return nil, joinFieldErrors(decodeErrors(err))
	}
	c.applyDefaults()
	if errs := c.validate(); len(errs) > 0 {
		return nil, joinFieldErrors(errs)
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = DefaultAdminListen
	}
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
}

// FieldError is one problem at one key path.
type FieldError struct {
	Path string
	Msg  string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// joinFieldErrors sorts errors by path so that output is stable and related
// problems sit together.
func joinFieldErrors(fes []FieldError) error {
	sort.SliceStable(fes, func(i, j int) bool { return fes[i].Path < fes[j].Path })
	errs := make([]error, len(fes))
	for i, fe := range fes {
		errs[i] = fe
	}
	return errors.Join(errs...)
}

// propertyError is returned by propertiesHook so that the key inside the
// map can be added to the path.
type propertyError struct {
	key string
	msg string
}

func (e *propertyError) Error() string { return fmt.Sprintf("%s: %s", e.key, e.msg) }

var propertiesType = reflect.TypeOf(Properties{})

// propertiesHook turns a YAML mapping of scalars into Properties, keeping
// numbers and booleans as the text Kafka expects.
func propertiesHook(from, to reflect.Type, data any) (any, error) {
	if to != propertiesType || data == nil {
		return data, nil
	}
	m, ok := data.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("expected a mapping of names to values, got %s", yamlKind(data))
	}
	out := make(Properties, len(m))
	for key, v := range m {
		switch v := v.(type) {
		case string:
			out[key] = v
		case bool:
			out[key] = strconv.FormatBool(v)
		case int:
			out[key] = strconv.Itoa(v)
		case int64:
			out[key] = strconv.FormatInt(v, 10)
		case uint64:
			out[key] = strconv.FormatUint(v, 10)
		case float64:
			out[key] = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			return nil, &propertyError{key: key, msg: fmt.Sprintf("expected a single value, got %s", yamlKind(v))}
		}
	}
	return out, nil
}

// decodeErrors flattens mapstructure's nested, joined errors into one
// FieldError per problem with the full key path.
func decodeErrors(err error) []FieldError {
	var out []FieldError
	var walk func(err error, path string)
	walk = func(err error, path string) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e, path)
			}
			return
		}
		if de, ok := err.(*mapstructure.DecodeError); ok {
			walk(de.Unwrap(), de.Name())
			return
		}
		// mapstructure wraps the joined errors in a summary line.
		if _, ok := err.(mapstructure.Error); !ok {
			if inner := errors.Unwrap(err); inner != nil {
				walk(inner, path)
				return
			}
		}
		out = append(out, leafErrors(path, err)...)
	}
	walk(err, "")
	return out
}

// leafErrors phrases one mapstructure error for an operator.
func leafErrors(path string, err error) []FieldError {
	var pe *propertyError
	var ue *mapstructure.UnconvertibleTypeError
	var pa *mapstructure.ParseError
	switch {
	case errors.As(err, &pe):
		return []FieldError{{joinPath(path, pe.key), pe.msg}}
	case errors.As(err, &ue):
		return []FieldError{{path, fmt.Sprintf("expected %s, got %s", goKind(ue.Expected.Type()), describeValue(ue.Value))}}
	case errors.As(err, &pa):
		return []FieldError{{path, fmt.Sprintf("expected %s, got %s", goKind(pa.Expected.Type()), describeValue(pa.Value))}}
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "source data must be an array or slice, got "); ok {
		return []FieldError{{path, "expected a list, got " + yamlKindName(rest)}}
	}
	if rest, ok := strings.CutPrefix(msg, "expected a map or struct, got "); ok {
		return []FieldError{{path, "expected a mapping, got " + yamlKindName(strings.Trim(rest, "'"))}}
	}
	if rest, ok := strings.CutPrefix(msg, "has invalid keys: "); ok {
		// One error per unknown key, with the key in the path
		// (mapstructure lists them sorted, joined by ", ").
		var out []FieldError
		for _, k := range strings.Split(rest, ", ") {
			out = append(out, FieldError{joinPath(path, k), "unknown key"})
		}
		return out
	}
	if strings.ContainsAny(msg, "\r\n") {
		msg = strconv.Quote(msg) // one problem, one line
	}
	return []FieldError{{path, msg}}
}

// joinPath appends a key to a key path. A key of other characters than
// YAML key names and Kafka config names use (a map key the file made up)
// is quoted, so that a path is always one line and reads as one.
func joinPath(path, key string) string {
	if !plainKey(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func plainKey(key string) bool { return key != "" && nameChars(key) }

// goKind names a Go type the way the YAML author thinks of it.
func goKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

func yamlKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int64, uint64:
		return "a number"
	case float64:
		return "a decimal number"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

// yamlKindName translates a Go reflect kind name from a mapstructure message.
func yamlKindName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "map", "struct":
		return "a mapping"
	case "slice", "array":
		return "a list"
	case "bool":
		return "a boolean"
	case "int", "int64", "uint64", "float64":
		return "a number"
	}
	return kind
}

func describeValue(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case []any, map[string]any, nil:
		return yamlKind(v)
	}
	return fmt.Sprintf("%s (%v)", yamlKind(v), v)
}

package docs_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// shellLanguages are the fence languages of shell examples. A fence with
// another language (json, yaml, nginx, none for output) is not an example.
var shellLanguages = map[string]bool{"sh": true, "bash": true, "shell": true}

// annotationPrefix starts the HTML comment that may precede a shell example.
const annotationPrefix = "<!-- example:"

// example is one fenced shell block of a document and what its annotation
// says about it.
type example struct {
	file   string
	line   int // of the opening fence
	script string

	notRun     string   // the reason it is not run; "" when it is run
	background bool     // left running while the later examples run
	ready      string   // background: its output shows this once it is ready
	shows      []string // its output must contain each
	exit       int      // the exit status it must end with
}

func (e example) String() string { return fmt.Sprintf("%s:%d", e.file, e.line) }

// parseExamples returns the shell examples of a Markdown document in order.
//
// An example may be preceded (blank lines allowed) by one annotation,
// `<!-- example: DIRECTIVE; DIRECTIVE ... -->`, with the directives
//
//	not run: REASON   not run, and the run lists it with REASON
//	background        started and left running until every document's
//	                  examples have run (a server)
//	ready: TEXT       background: wait until its output contains TEXT
//	shows: TEXT       its output (stdout and stderr) must contain TEXT; for a
//	                  background example, by the end of the run
//	exit: N           it must exit with status N (default 0)
//
// An annotation that is not followed by a shell example, or that has an
// unknown directive, is an error, so that a typo cannot turn a check off.
func parseExamples(file string, doc []byte) ([]example, error) {
	var (
		out      []example
		errs     []error
		pending  *example // from an annotation, waiting for its block
		pendLine int
		inFence  string // the fence that opened the block being read
		cur      *example
		body     strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(doc))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if inFence != "" {
			if strings.HasPrefix(trimmed, inFence) && strings.Trim(trimmed, "`") == "" {
				if cur != nil {
					cur.script = body.String()
					out = append(out, *cur)
				}
				inFence, cur = "", nil
				continue
			}
			if cur != nil {
				body.WriteString(line + "\n")
			}
			continue
		}
		if fence, lang, ok := openingFence(trimmed); ok {
			inFence = fence
			if !shellLanguages[lang] {
				if pending != nil {
					errs = append(errs, fmt.Errorf("%s:%d: the annotation is followed by a %q block, not a shell example", file, pendLine, lang))
					pending = nil
				}
				continue
			}
			cur = &example{file: file, line: n}
			if pending != nil {
				pending.file, pending.line = file, n
				cur = pending
				pending = nil
			}
			body.Reset()
			continue
		}
		if rest, ok := strings.CutPrefix(trimmed, annotationPrefix); ok {
			if pending != nil {
				errs = append(errs, fmt.Errorf("%s:%d: the annotation is followed by another annotation, not a shell example", file, pendLine))
			}
			ex, err := parseAnnotation(rest)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %w", file, n, err))
				continue
			}
			pending, pendLine = &ex, n
			continue
		}
		if trimmed != "" && pending != nil {
			errs = append(errs, fmt.Errorf("%s:%d: the annotation is followed by text, not a shell example", file, pendLine))
			pending = nil
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", file, err))
	}
	if inFence != "" {
		errs = append(errs, fmt.Errorf("%s: a code block is not closed", file))
	}
	if pending != nil {
		errs = append(errs, fmt.Errorf("%s:%d: the annotation is followed by no shell example", file, pendLine))
	}
	return out, errors.Join(errs...)
}

// openingFence recognises "```lang ..." and returns the fence and the
// language (the info string's first word).
func openingFence(trimmed string) (fence, lang string, ok bool) {
	n := len(trimmed) - len(strings.TrimLeft(trimmed, "`"))
	if n < 3 {
		return "", "", false
	}
	info := strings.Fields(trimmed[n:])
	if len(info) > 0 {
		lang = info[0]
	}
	return trimmed[:n], lang, true
}

// parseAnnotation reads the directives after "<!-- example:".
func parseAnnotation(rest string) (example, error) {
	var ex example
	text, ok := strings.CutSuffix(strings.TrimSpace(rest), "-->")
	if !ok {
		return ex, errors.New("an example annotation must end with --> on the same line")
	}
	for d := range strings.SplitSeq(text, ";") {
		key, value, _ := strings.Cut(strings.TrimSpace(d), ":")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "not run":
			if value == "" {
				return ex, errors.New(`"not run" needs a reason: "not run: REASON"`)
			}
			ex.notRun = value
		case "background":
			ex.background = true
		case "ready":
			ex.ready = value
		case "shows":
			ex.shows = append(ex.shows, value)
		case "exit":
			n, err := strconv.Atoi(value)
			if err != nil {
				return ex, fmt.Errorf("exit: want a number, got %q", value)
			}
			ex.exit = n
		default:
			return ex, fmt.Errorf("unknown example directive %q (known: not run, background, ready, shows, exit)", key)
		}
		if (key != "background" && key != "not run") && value == "" {
			return ex, fmt.Errorf("%q needs a value", key)
		}
	}
	if ex.ready != "" && !ex.background {
		return ex, errors.New(`"ready" is only for a background example`)
	}
	return ex, nil
}

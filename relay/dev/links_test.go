package dev

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocLinks: every relative link in README.md and docs/*.md names a
// file or folder inside the repository (a clone has nothing outside it),
// and a #fragment names a heading of the linked Markdown file. Links
// inside code blocks and absolute URLs are not checked.
func TestDocLinks(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	link := regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	checked := 0
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, file)
		for i, line := range strings.Split(withoutCode(string(text), true), "\n") {
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				path, frag, _ := strings.Cut(target, "#")
				dest := file
				if path != "" {
					dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				}
				if r, err := filepath.Rel(root, dest); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
					t.Errorf("%s:%d: link %s leaves the repository", rel, i+1, target)
					continue
				}
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s:%d: link %s: %v", rel, i+1, target, err)
					continue
				}
				if frag != "" && strings.HasSuffix(dest, ".md") {
					body, _ := os.ReadFile(dest)
					if !anchors(string(body))[frag] {
						t.Errorf("%s:%d: link %s: no heading #%s in %s", rel, i+1, target, frag, filepath.Base(dest))
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative links found: the link pattern is broken")
	}
}

// withoutCode blanks fenced code blocks and, with spans, inline code
// spans, keeping the line count.
func withoutCode(md string, spans bool) string {
	lines := strings.Split(md, "\n")
	fenced := false
	span := regexp.MustCompile("`[^`]*`")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			lines[i] = ""
			continue
		}
		if fenced {
			lines[i] = ""
		} else if spans {
			lines[i] = span.ReplaceAllString(l, "``")
		}
	}
	return strings.Join(lines, "\n")
}

// anchors are the GitHub-style fragment names of md's headings.
func anchors(md string) map[string]bool {
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, l := range strings.Split(withoutCode(md, false), "\n") {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(l, "#")))
		h = strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")
		for n := 0; ; n++ { // repeated headings get -1, -2, …
			a := h
			if n > 0 {
				a = h + "-" + string(rune('0'+n))
			}
			if !out[a] {
				out[a] = true
				break
			}
		}
	}
	return out
}

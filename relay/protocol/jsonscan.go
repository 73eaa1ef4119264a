package protocol

import (
	"encoding/json"
	"math"
	"strconv"
)

// Scanning JSON that is known to be valid, for the fast paths of the hot
// commands and replies (an rpc per bet): each helper returns where a
// member or value ends, trusting the text's validity, and the fast paths
// give up (leaving the work to encoding/json) on anything they do not
// recognise.

// JSONStringEnd returns the index just past the JSON string that starts at
// b[i] (a '"'), in valid JSON.
func JSONStringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// JSONValueEnd returns the index just past the JSON value that starts at
// b[i], in valid JSON; a number or literal ends before the next ',', '}',
// ']' or space.
func JSONValueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return JSONStringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = JSONStringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	return j
}

// JSONMembers calls fn with each member of the JSON object b (valid JSON,
// no space between tokens) as its raw key (without quotes, escapes not
// undone) and raw value, until fn returns false. It reports whether b was
// such an object and every member was taken.
func JSONMembers(b []byte, fn func(key, value []byte) bool) bool {
	if len(b) < 2 || b[0] != '{' {
		return false
	}
	if b[1] == '}' {
		return len(b) == 2
	}
	for i := 1; ; {
		if b[i] != '"' {
			return false
		}
		end := JSONStringEnd(b, i)
		if end >= len(b) || b[end] != ':' || end+1 >= len(b) {
			return false
		}
		vend := JSONValueEnd(b, end+1)
		if vend == end+1 || !fn(b[i+1:end-1], b[end+1:vend]) || vend >= len(b) {
			return false
		}
		switch b[vend] {
		case '}':
			return vend+1 == len(b)
		case ',':
			i = vend + 1
		default:
			return false
		}
	}
}

// onlyMembers returns the values of keys a and b of the JSON object o
// (valid, no space between tokens; nil for a key it lacks), and false if
// it has any other key, or one twice.
func onlyMembers(o []byte, a, b string) (va, vb []byte, ok bool) {
	ok = JSONMembers(o, func(k, v []byte) bool {
		switch {
		case string(k) == a && va == nil:
			va = v
		case string(k) == b && vb == nil:
			vb = v
		default:
			return false
		}
		return true
	})
	return va, vb, ok
}

// decodeRPCFast decodes the rpc command as the SDKs send it,
// {"id":N,"rpc":{"method":"M","data":{…}}} without spaces (members in
// any order, data optional), into c; anything else — another command,
// spaces between tokens, a key twice or in another case, a method that is
// not plain ASCII — returns false for encoding/json to decode. line is valid JSON;
// what c gets is what json.Unmarshal would give it (TestDecodeRPCFast).
func decodeRPCFast(line []byte, c *Command) bool {
	id, rpc, ok := onlyMembers(line, "id", "rpc")
	if !ok || id == nil || rpc == nil || len(id) > 10 || id[0] < '0' || id[0] > '9' {
		return false
	}
	n, err := strconv.ParseUint(string(id), 10, 32)
	if err != nil || n > math.MaxUint32 {
		return false
	}
	method, data, ok := onlyMembers(rpc, "method", "data")
	if !ok || len(method) < 2 || method[0] != '"' || !PlainJSON(string(method[1:len(method)-1])) || data != nil && data[0] != '{' {
		return false
	}
	c.ID = uint32(n)
	c.RPC = &RPCRequest{Method: string(method[1 : len(method)-1])}
	if data != nil {
		c.RPC.Data = append(json.RawMessage(nil), data...) // msg is the caller's
	}
	return true
}

// appendRPCReplyFast appends the reply to an rpc as json.Marshal would, an
// id with either the result's data or an error, when r is only that and
// every string and the data need no escaping (TestAppendRPCReplyFast);
// else it returns false.
func appendRPCReplyFast(msg []byte, r *Reply) ([]byte, bool) {
	if r.ID == 0 || (r.RPC == nil) == (r.Error == nil) || *r != (Reply{ID: r.ID, RPC: r.RPC, Error: r.Error}) {
		return msg, false
	}
	start := len(msg)
	msg = append(strconv.AppendUint(append(msg, `{"id":`...), uint64(r.ID), 10), ',')
	if e := r.Error; e != nil {
		if !PlainJSON(e.Message) {
			return msg[:start], false
		}
		msg = strconv.AppendUint(append(msg, `"error":{"code":`...), uint64(e.Code), 10)
		msg = append(append(append(msg, `,"message":"`...), e.Message...), '"')
		if e.Temporary {
			msg = append(msg, `,"temporary":true`...)
		}
		return append(msg, "}}"...), true
	}
	d := r.RPC.Data
	if len(d) == 0 {
		return append(msg, `"rpc":{}}`...), true
	}
	// json.Marshal compacts a RawMessage and escapes <, >, & and
	// U+2028/9 in it; plain compact data is copied as it is.
	for _, c := range d {
		// 0xE2 leads U+2028/9 (and other characters: those go the
		// slow way too).
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '<' || c == '>' || c == '&' || c == 0xE2 {
			return msg[:start], false
		}
	}
	if !json.Valid(d) {
		return msg[:start], false
	}
	msg = append(append(msg, `"rpc":{"data":`...), d...)
	return append(msg, "}}"...), true
}

// PlainJSON says whether s is a JSON string's text as encoding/json writes
// it, unescaped: printable ASCII without '"', '\\', '<', '>', '&'.
func PlainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

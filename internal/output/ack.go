package output

// AppendAckMark marks line, one whole line as the Append functions write it
// (a JSON object and "\n"), as the last line of its group: it adds
// "ack":true as the object's last field, in place when line has the room.
// With acknowledgements on, a reader that sees the mark knows it holds every
// line of the LSNs up to that line's, so acknowledging its "lsn" is exact.
// A line not ending in "}\n" is returned unchanged.
func AppendAckMark(line []byte) []byte {
	n := len(line)
	if n < 2 || line[n-2] != '}' || line[n-1] != '\n' {
		return line
	}
	return append(line[:n-2], `,"ack":true}`+"\n"...)
}

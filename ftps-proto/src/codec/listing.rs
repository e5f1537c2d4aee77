//! Directory listings: MLSD/MLST facts (RFC 3659 section 7) and `LIST` lines (Unix `ls -l` and DOS/IIS forms).

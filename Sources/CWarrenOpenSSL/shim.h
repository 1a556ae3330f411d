// The parts of the system OpenSSL (libcrypto) that WarrenFastAEAD uses.
#ifndef C_WARREN_OPENSSL_H
#define C_WARREN_OPENSSL_H

#include <openssl/crypto.h>
#include <openssl/evp.h>

#endif

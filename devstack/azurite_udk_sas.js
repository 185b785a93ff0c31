// Loaded before Azurite in OAuth mode (devstack/emulators.py, start_azurite(oauth=True)).
//
// azure-storage-blob 12.31 signs user delegation SAS with service version 2026-10-06, whose string-to-sign
// has two more fields after the encryption scope (signed request headers `srh` and signed request query
// `srq`, empty unless used). Azurite 3.35 knows string-to-sign layouts only up to 2025-07-05, so it would
// refuse every SDK-made user delegation SAS. This wraps its UDK signature function: for versions from
// 2026-04-06 on it inserts the two fields, empty, and signs that (a SAS that sets srh/srq therefore fails the
// signature check: they cannot be enforced here). The signature is still verified; nothing else changes.
"use strict";
const crypto = require("crypto");
const path = require("path");
const azuriteSrc = process.env.AZURITE_SRC;
const sas = require(path.join(azuriteSrc, "blob", "authentication", "IBlobSASSignatureValues.js"));
const original = sas.generateBlobSASSignatureWithUDK;
const ENCRYPTION_SCOPE_FIELD = 20; // index of `ses` in the 2025-07-05 layout; srh and srq follow it from 2026-04-06

sas.generateBlobSASSignatureWithUDK = function (values, resource, accountName, udkValue) {
  const [signature, stringToSign] = original(values, resource, accountName, udkValue);
  if (values.version < "2026-04-06") {
    return [signature, stringToSign];
  }
  const fields = stringToSign.split("\n");
  fields.splice(ENCRYPTION_SCOPE_FIELD + 1, 0, "", "");
  const extended = fields.join("\n");
  return [crypto.createHmac("sha256", udkValue).update(extended, "utf8").digest("base64"), extended];
};

require(path.join(azuriteSrc, "azurite.js"));

// Decrypts a WebPush message (RFC 8291, aes128gcm) with http_ece, as a
// browser would: reads {"message", "privateKey", "auth"} (base64url) as
// JSON on stdin and writes the plaintext to stdout.
'use strict';
const crypto = require('crypto');
const ece = require('http_ece');

let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const { message, privateKey, auth } = JSON.parse(input);
  const receiver = crypto.createECDH('prime256v1');
  receiver.setPrivateKey(Buffer.from(privateKey, 'base64url'));
  const plain = ece.decrypt(Buffer.from(message, 'base64url'), {
    version: 'aes128gcm',
    privateKey: receiver,
    authSecret: auth,
  });
  process.stdout.write(plain);
});

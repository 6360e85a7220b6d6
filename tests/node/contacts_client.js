// A ContactsService client in another language, generated at run time from our
// .proto files by @grpc/proto-loader. Usage:
//   node contacts_client.js <address> <token> <parent> [filter]
// Prints the ListContacts response as JSON; exits 1 with the gRPC status on error.
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, token, parent, filter = ""] = process.argv.slice(2);
const protos = path.resolve(__dirname, "..", "..", "protos");
const definition = protoLoader.loadSync("listboss/contacts/v1/contacts_service.proto", {
  includeDirs: [protos],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
});
const { ContactsService } = grpc.loadPackageDefinition(definition).listboss.contacts.v1;
const client = new ContactsService(address, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.add("authorization", `Bearer ${token}`);

client.ListContacts({ parent, filter }, metadata, (error, response) => {
  if (error) {
    console.error(JSON.stringify({ code: grpc.status[error.code], details: error.details }));
    process.exit(1);
  }
  console.log(JSON.stringify(response));
});

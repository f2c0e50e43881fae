#include "enforcer/ports/libvirt_domains.hpp"

#include "policies/net_address.hpp"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <fstream>
#include <memory>
#include <sstream>

namespace bulkhead::enforcer::ports {
namespace {

struct DocFree {
    void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};
struct XmlFree {
    void operator()(xmlChar* s) const { xmlFree(s); }
};

// A live XML file is a few kilobytes; anything far larger is not libvirt's.
constexpr std::size_t max_document_bytes = 4 << 20;

bool named(const xmlNode* node, std::string_view name) {
    return node != nullptr && node->type == XML_ELEMENT_NODE &&
           std::string_view(reinterpret_cast<const char*>(node->name)) == name;
}

const xmlNode* child(const xmlNode* parent, std::string_view name) {
    for (const xmlNode* c = parent->children; c != nullptr; c = c->next) {
        if (named(c, name)) {
            return c;
        }
    }
    return nullptr;
}

std::string text_of(const xmlNode* node) {
    std::unique_ptr<xmlChar, XmlFree> content(xmlNodeGetContent(node));
    std::string out = content ? reinterpret_cast<const char*>(content.get()) : "";
    const auto first = out.find_first_not_of(" \t\r\n");
    const auto last = out.find_last_not_of(" \t\r\n");
    return first == std::string::npos ? "" : out.substr(first, last - first + 1);
}

std::string attribute(const xmlNode* node, const char* name) {
    std::unique_ptr<xmlChar, XmlFree> value(xmlGetProp(node, reinterpret_cast<const xmlChar*>(name)));
    return value ? reinterpret_cast<const char*>(value.get()) : "";
}

bool in_label_namespace(const xmlNode* node) {
    return node->ns != nullptr && node->ns->href != nullptr &&
           std::string_view(reinterpret_cast<const char*>(node->ns->href)) == libvirt_label_namespace;
}

}  // namespace

std::expected<std::vector<DomainNic>, std::string> parse_domain_xml(std::string_view text) {
    if (text.size() > max_document_bytes) {
        return std::unexpected("larger than " + std::to_string(max_document_bytes) + " bytes");
    }
    // No network, no entity expansion, no DTD loading: the file is data, not instructions.
    std::unique_ptr<xmlDoc, DocFree> doc(
        xmlReadMemory(text.data(), static_cast<int>(text.size()), "domain.xml", nullptr,
                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
    if (!doc) {
        const xmlError* error = xmlGetLastError();
        std::string why = error != nullptr && error->message != nullptr ? error->message : "not XML";
        while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) {
            why.pop_back();
        }
        return std::unexpected("not well-formed XML: " + why);
    }
    if (doc->intSubset != nullptr || doc->extSubset != nullptr) {
        // libvirt never writes one; entities are how an XML file reaches for other files.
        return std::unexpected("a DOCTYPE is not allowed in a libvirt domain file");
    }
    const xmlNode* root = xmlDocGetRootElement(doc.get());
    const xmlNode* domain = named(root, "domstatus") ? child(root, "domain") : root;
    if (!named(domain, "domain")) {
        return std::unexpected("no <domain> element (expected libvirt's <domstatus> or <domain>)");
    }
    const xmlNode* name = child(domain, "name");
    if (name == nullptr || text_of(name).empty()) {
        return std::unexpected("the <domain> has no <name>");
    }
    DomainNic base;
    base.domain = text_of(name);
    if (const xmlNode* uuid = child(domain, "uuid")) {
        base.uuid = text_of(uuid);
    }
    if (const xmlNode* metadata = child(domain, "metadata")) {
        for (const xmlNode* group = metadata->children; group != nullptr; group = group->next) {
            if (!named(group, "labels") || !in_label_namespace(group)) {
                continue;  // other tools' metadata (OpenStack's nova:instance, …)
            }
            for (const xmlNode* label = group->children; label != nullptr; label = label->next) {
                if (!named(label, "label")) {
                    continue;
                }
                const auto key = attribute(label, "name");
                if (key.empty()) {
                    return std::unexpected("a <bulkhead:label> without a name attribute");
                }
                base.labels[key] = text_of(label);
            }
        }
    }
    std::vector<DomainNic> out;
    const xmlNode* devices = child(domain, "devices");
    std::size_t position = 0;
    for (const xmlNode* device = devices != nullptr ? devices->children : nullptr; device != nullptr;
         device = device->next) {
        if (!named(device, "interface")) {
            continue;
        }
        ++position;
        const xmlNode* mac = child(device, "mac");
        if (mac == nullptr) {
            continue;  // no MAC: nothing to bind the port by (libvirt writes one for every live NIC)
        }
        auto normalized = policy::normalize_mac(attribute(mac, "address"));
        if (!normalized) {
            return std::unexpected("interface " + std::to_string(position) + ": " + normalized.error());
        }
        DomainNic nic = base;
        nic.mac = *normalized;
        if (const xmlNode* target = child(device, "target")) {
            nic.target = attribute(target, "dev");
        }
        out.push_back(std::move(nic));
    }
    return out;
}

DomainDirectory read_domain_directory(const std::filesystem::path& directory) {
    DomainDirectory out;
    std::error_code ec;
    std::filesystem::directory_iterator it(directory, ec);
    if (ec) {
        return out;  // no libvirt here (yet)
    }
    for (const auto& entry : it) {
        if (entry.path().extension() != ".xml" || !entry.is_regular_file(ec)) {
            continue;
        }
        std::ifstream in(entry.path(), std::ios::binary);
        std::ostringstream text;
        text << in.rdbuf();
        if (!in && !in.eof()) {
            out.errors.push_back(entry.path().string() + ": unreadable");
            continue;
        }
        auto nics = parse_domain_xml(text.str());
        if (!nics) {
            out.errors.push_back(entry.path().string() + ": " + nics.error());
            continue;
        }
        out.nics.insert(out.nics.end(), nics->begin(), nics->end());
    }
    return out;
}

}  // namespace bulkhead::enforcer::ports

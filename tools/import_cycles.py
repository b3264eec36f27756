#!/usr/bin/env python3

"""Module-level import graph of src/ from `use crate::`/`crate::` paths (and `super::`), then cycles
between top-level modules and between ops' / model's submodules."""
import os,re,sys,itertools
root=sys.argv[1] if len(sys.argv)>1 else 'src'
def modpath(f):
    p=os.path.relpath(f,root)[:-3].split('/')
    if p[-1] in('mod','lib','main'): p=p[:-1]
    return p
edges={}
for d,_,fs in os.walk(root):
    for fn in fs:
        if not fn.endswith('.rs'): continue
        f=os.path.join(d,fn); m=modpath(f)
        s=open(f).read()
        s=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*','',s,flags=re.S)  # unit tests at file end
        s=re.sub(r'//.*','',s)
        for mm in re.finditer(r'\bcrate::([a-z_0-9]+(?:::[a-z_0-9]+)*)',s):
            edges.setdefault(tuple(m),set()).add(tuple(mm.group(1).split('::')))
        for mm in re.finditer(r'\bsuper::([a-z_0-9]+(?:::[a-z_0-9]+)*)',s):
            base=m[:-1] if not fn.startswith('mod') else m[:-1]
            edges.setdefault(tuple(m),set()).add(tuple(base)+tuple(mm.group(1).split('::')))
def cyc(depth):
    g={}
    for a,bs in edges.items():
        for b in bs:
            ka=a[:depth]; kb=b[:depth]
            if len(ka)<depth or len(kb)<depth: 
                if ka[:1]!=kb[:1] and depth==1: pass
                else: continue
            if ka[:depth-1]!=kb[:depth-1] or ka==kb: continue
            g.setdefault(ka,set()).add(kb)
    # find cycles (SCCs)
    idx={};low={};st=[];on=set();res=[];c=[0]
    def sc(v):
        idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in g.get(v,()):
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v: break
            if len(comp)>1: res.append(comp)
    for v in list(g): 
        if v not in idx: sc(v)
    return res,g
bad=0
for depth in (1,2,3):
    res,g=cyc(depth)
    for comp in res:
        bad+=1; print('CYCLE at depth',depth,':',' <-> '.join('::'.join(x) for x in comp))
        for a in comp:
            print('   ','::'.join(a),'->',sorted('::'.join(b) for b in g[a] if b in comp))
print('ops imports:',sorted({'::'.join(b[:1]) for a,bs in edges.items() if a[:1]==('ops',) for b in bs if b[:1]!=('ops',)}))
print('cycles:',bad)

# file-level graph: every path resolves to the longest prefix that is a module file
mods=set(edges.keys())
for d,_,fs in os.walk(root):
    for fn in fs:
        if fn.endswith('.rs'): mods.add(tuple(modpath(os.path.join(d,fn))))
def resolve(p):
    for k in range(len(p),0,-1):
        if tuple(p[:k]) in mods: return tuple(p[:k])
    return None
g={}
for a,bs in edges.items():
    for b in bs:
        r=resolve(b)
        if r and r!=a and not (len(a)>len(r) and a[:len(r)]==r): # a child using its parent's items is not a cycle edge... keep parent->child only
            g.setdefault(a,set()).add(r)
idx={};low={};st=[];on=set();res=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in g.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v: break
        if len(comp)>1: res.append(comp)
for v in list(g):
    if v not in idx: sc(v)
print('file-level cycles (child->parent re-export uses excluded):',len(res))
for comp in res:
    print('  ',' , '.join('::'.join(x) for x in comp))
    for a in comp: print('     ','::'.join(a),'->',sorted('::'.join(b) for b in g[a] if b in comp))
